"""The CPU cores this process may use."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """This process's affinity where the OS has one (a container's or ``taskset``'s share, not the machine's
    count), else the machine's core count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
