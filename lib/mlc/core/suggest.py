"""One helper for the "did you mean ...?" hints of every registry and params error."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: object, choices: Iterable[object], n: int = 1) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``name``, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
