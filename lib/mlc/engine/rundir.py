"""Run directories: ``outputs/<run name>/`` holds the resolved params, the environment, and per method
its checkpoints, logs and metrics, plus the executed notebooks.

A run directory belongs to one set of params: reusing a name with different params is an error
that lists the differences (a finished run is never overwritten silently).  Rerunning with the same
params resumes or reuses what is there.  Methods may be added to a run later (the kit grows one
method at a time): a method the stored params do not have yet joins them, and so does a settings
section they predate (e.g. ``clip``); the shared settings they hold (data, evaluation, seed) and every
method already stored must stay the same.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import yaml

from mlc.config.params import RunParams, params_to_dict
from mlc.core.io import atomic_write_text
from mlc.engine import stage


class RunConflictError(RuntimeError):
    pass


# Settings that change speed, placement or logging, never a result: they may differ between the runs that
# build one run directory (resume on another machine, more loader workers).  Loader workers qualify because
# each image's augmentation is seeded from (epoch, image), not from the worker that loads it.
NON_RESULT_KEYS = ("description", "output_root", "log.*", "data.num_workers", "data.check_images",
                   "data.image_cache", "data.uint8_batches",
                   "methods.*.train.device", "methods.*.train.log_every", "methods.*.train.devices",
                   "methods.*.train.channels_last", "methods.*.train.cudnn_benchmark", "methods.*.train.fused_adamw",
                   "methods.*.train.compile")


def _is_non_result(key: str) -> bool:
    import fnmatch
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in NON_RESULT_KEYS)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def diff_params(old: dict, new: dict, allow_new_keys: bool = False) -> list[str]:
    """Differences between two resolved params, one line per dotted key.  With ``allow_new_keys`` a key
    the old params lack (a setting a newer kit added) is not a difference."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b)) if not allow_new_keys else sorted(a)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>") and not _is_non_result(k)]


def finished_methods(params: RunParams, baselines: bool = True) -> list[str]:
    """The params' methods whose training finished successfully (failed or unfinished runs are left out);
    ``baselines=False`` leaves out the baseline runs of the papers' comparisons (``baseline_for``)."""
    return [m for m, mp in params.methods.items() if stage.is_finished(params.run_dir / m)
            and (baselines or mp.baseline_for is None)]


def environment_info(repo_root: Path | None = None) -> dict:
    """Python, platform, package versions, git commit and device, for ``environment.json``."""
    packages = {}
    for name in ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "pandas", "papermill", "mlc-kit"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root or Path.cwd(), capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_root or Path.cwd(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    import torch
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": packages,
            "git_commit": commit, "cuda": torch.cuda.is_available(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
            "cpu_threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _trained_anything(run_dir: Path, methods) -> list[str]:
    """The stored methods whose training has started (a checkpoint, a result or a failure)."""
    return [m for m in methods if stage.status(run_dir / m) != "new"]


def _write_environment(run_dir: Path) -> None:
    path = run_dir / "environment.json"
    try:
        json.loads(path.read_text())
        return
    except (OSError, ValueError):           # missing, empty (a full disk) or corrupt: write it again
        atomic_write_text(path, json.dumps(environment_info(), indent=1))


def prepare_run_dir(params: RunParams) -> Path:
    """Create or reopen ``outputs/<name>/`` for these params; refuse one that holds other params.

    Only results are protected: stored settings may change while nothing has been trained yet (a typo
    fixed after a failed start), a stored method may change while its own training has not started, and
    the settings in :data:`NON_RESULT_KEYS` may always change.
    """
    run_dir = params.run_dir
    resolved = params_to_dict(params)
    stored = run_dir / "params.yaml"
    if stored.is_file():
        try:
            original = yaml.safe_load(stored.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RunConflictError(f"{stored}: the run's stored params are not readable ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0]}); restore the file, or delete {run_dir} to start the "
                                   f"run again") from None
        if not isinstance(original, dict) or not isinstance(original.get("methods") or {}, dict):
            what = "are not a mapping" if not isinstance(original, dict) else "have a 'methods' that is not a mapping"
            raise RunConflictError(f"{stored}: the run's stored params {what}; restore the file, or "
                                   f"delete {run_dir} to start the run again")
        stored_methods, new_methods = original.get("methods") or {}, resolved.get("methods") or {}
        started = _trained_anything(run_dir, stored_methods)
        # only what has trained is protected: nothing at all (the stored params are then only a record), or
        # the shared settings and every method whose training has started
        old = {**original, "methods": {m: v for m, v in stored_methods.items() if m in started}} if started else \
            {**resolved, "methods": {}}
        common = set(old["methods"]) & set(new_methods)
        # keys the stored params lack (new methods, settings a newer kit added) are additions, not changes
        changes = diff_params({**old, "methods": {m: old["methods"][m] for m in common}},
                              {**resolved, "methods": {m: new_methods[m] for m in common}}, allow_new_keys=True)
        if changes:
            raise RunConflictError(
                f"{run_dir} already holds run {params.name!r} made with other params "
                f"({len(changes)} differences):\n  " + "\n  ".join(changes[:20]) +
                f"\nUse another run name (key 'name' in {params.source}) or delete {run_dir} to start again.")
        merged = {**resolved, "methods": {**stored_methods, **new_methods}}
        if merged != original:
            atomic_write_text(stored, f"# resolved from {params.source}\n" + yaml.safe_dump(merged, sort_keys=False))
        _write_environment(run_dir)
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stored, f"# resolved from {params.source}\n" + yaml.safe_dump(resolved, sort_keys=False))
    _write_environment(run_dir)
    return run_dir
