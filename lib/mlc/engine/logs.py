"""What a training stage writes for people and their tools, beside ``history.jsonl``:

* ``train.log``: every line the terminal shows, with timestamps (Python ``logging``);
* ``history.csv``: one row per epoch, as timm's ``summary.csv`` (pandas);
* TensorBoard event files in the stage folder itself, so that ``tensorboard --logdir outputs`` names each run
  ``<run>/<method>``: scalars per step (losses, learning rates) and per epoch (validation metrics of the live
  and EMA weights, the best epoch), the final test metrics, the run's hparams (the params that make its result,
  for the HPARAMS tab) and figures as images (:func:`log_figure`).  Metrics are in the terminal's units: mAP,
  precision, recall and F1 in percent, epochs counted from 1.  A stage begun before this layout keeps writing to
  its ``tensorboard/`` folder (:func:`tensorboard_dir`);
* Weights & Biases, only when the params ask for it (``log.wandb: true``) and ``wandb`` is installed.

Only the main process writes.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
from pathlib import Path

import pandas as pd
import yaml

from mlc.core.io import atomic_write_text
from mlc.engine.rundir import NON_RESULT_KEYS

EVENTS = "events.out.tfevents.*"         # TensorBoard's event files
LEGACY_TENSORBOARD = "tensorboard"        # where earlier kits wrote them (TensorBoard named every run .../tensorboard)
# metrics that are fractions in history.jsonl / result.json and percentages in the terminal, notebooks and TensorBoard
PERCENT_METRICS = frozenset({"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"})


def tensorboard_dir(stage_dir: str | os.PathLike) -> Path:
    """The folder of a stage's TensorBoard event files: the stage folder itself (TensorBoard names the run after
    its path, ``<run>/<method>``), or its ``tensorboard/`` folder when a stage begun by an older kit already
    holds events there (so that one stage stays one TensorBoard run)."""
    stage_dir = Path(stage_dir)
    legacy = stage_dir / LEGACY_TENSORBOARD
    return legacy if legacy.is_dir() and any(legacy.glob(EVENTS)) else stage_dir


def in_display_units(name: str, value: float) -> float:
    """``value`` in the unit the terminal prints ``name`` in: mAP, precision, recall and F1 (``val_mAP_live``,
    ``test/top3_CF1``) in percent, anything else as stored."""
    parts = name.replace("/", "_").split("_")
    return 100 * value if PERCENT_METRICS.intersection(parts) else value


def log_figure(stage_dir: str | os.PathLike, tag: str, figure, step: int = 0) -> None:
    """Add a matplotlib ``figure`` to a stage's TensorBoard run as an image (tab IMAGES), after training: what a
    notebook draws from a finished run (learning curves, PR curves).  The figure stays open for display."""
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(tensorboard_dir(stage_dir))) as tb:
        tb.add_figure(tag, figure, step, close=False)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _hparam(value):
    """A value the HPARAMS tab can show: numbers and strings as they are, the rest (lists, booleans, null) as in
    YAML."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def result_hparams(stage_dir: str | os.PathLike, stage_name: str, fallback: dict | None = None) -> dict:
    """The params that make a stage's result, flat (``seed``, ``data.toy.n_labels``, ``eval.ap_mode``,
    ``method.train.lr``, ...): the run's stored ``params.yaml`` (beside the stage folder) without the settings of
    :data:`mlc.engine.rundir.NON_RESULT_KEYS`, the run's name, and the other methods; ``fallback`` (the same
    shape) when there is no ``params.yaml`` (a stage trained outside a run folder)."""
    stored = Path(stage_dir).parent / "params.yaml"
    params = None
    if stored.is_file():
        try:
            params = yaml.safe_load(stored.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            params = None
    if not isinstance(params, dict):
        params = fallback or {}
    out = {}
    for key, value in _flatten(params).items():
        if key == "name" or any(fnmatch.fnmatchcase(key, p) for p in NON_RESULT_KEYS):
            continue
        if key.startswith("methods."):
            if not key.startswith(f"methods.{stage_name}."):
                continue
            key = "method." + key.removeprefix(f"methods.{stage_name}.")
        out[key] = _hparam(value)
    return out


class RunLogger:
    """The logs of one stage (``outputs/<run>/<method>/``)."""

    def __init__(self, stage_dir: str | os.PathLike, stage_name: str, tensorboard: bool = True,
                 wandb: bool = False, wandb_project: str | None = None, enabled: bool = True, echo: bool = True):
        self.stage_dir, self.stage_name, self.enabled, self.echo = Path(stage_dir), stage_name, enabled, echo
        self.tb = self.wandb = None
        self.log = logging.getLogger(f"mlc.train.{stage_name}.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        if not enabled:
            return
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.stage_dir / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.log.addHandler(handler)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(tensorboard_dir(self.stage_dir)))
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                raise RuntimeError("log.wandb is true but wandb is not installed: pip install wandb, or set "
                                   "log.wandb: false") from None
            self.wandb = wb.init(project=wandb_project or "mlc-kit", name=f"{self.stage_dir.parent.name}/"
                                 f"{stage_name}", dir=str(self.stage_dir), resume="allow")

    def info(self, message: str) -> None:
        """A line for the terminal (stdout) and ``train.log``."""
        if not self.enabled:
            return
        if self.echo:
            print(message, flush=True)
        self.log.info(message)

    def step(self, global_step: int, losses: dict[str, float], lrs: dict[str, float]) -> None:
        """Per-step scalars: each loss term and the learning rate of each parameter group."""
        scalars = {f"train/{k}": v for k, v in losses.items()} | {f"lr/{k}": v for k, v in lrs.items()}
        self._scalars(scalars, global_step)

    def epoch(self, record: dict, global_step: int) -> None:
        """Per-epoch scalars: every number of the epoch's record (val mAP and loss of live / EMA, ...), in the
        terminal's units (:func:`in_display_units`); ``best_epoch`` counted from 1, as the terminal counts it."""
        scalars = {}
        for key, value in record.items():
            if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key == "best_epoch":
                value = value + 1             # history.jsonl counts epochs from 0
            split, _, rest = key.partition("_")
            name = f"{split}/{rest}" if split in ("val", "test") and rest else f"epoch/{key}"
            scalars[name] = in_display_units(name, value)
        self._scalars(scalars, global_step)

    def test(self, metrics: dict, global_step: int) -> list[str]:
        """The final test metrics of the selected checkpoint (mAP, P, R, F1 in percent); returns their tags."""
        scalars = {f"test/{k}": in_display_units(k, v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._scalars(scalars, global_step)
        return sorted(scalars)

    def hparams(self, hparams: dict) -> None:
        """The run's hparams for TensorBoard's HPARAMS tab (see :func:`result_hparams`), which shows them beside
        the last value of each of the run's scalars (the final test metrics, the best epoch).  Only the session
        is written, not an experiment: TensorBoard then lists the hparams of every run in the logdir (methods
        differ in their model's settings) instead of those of whichever run it reads first."""
        if not self.enabled or self.tb is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary
        _, start, end = hparams_summary({k: _hparam(v) for k, v in hparams.items()}, {})
        self.tb.file_writer.add_summary(start)
        self.tb.file_writer.add_summary(end)
        if self.wandb is not None:
            self.wandb.config.update(hparams, allow_val_change=True)

    def figure(self, tag: str, figure, step: int) -> None:
        """A matplotlib figure as an image (TensorBoard's IMAGES tab); the figure stays open."""
        if self.enabled and self.tb is not None:
            self.tb.add_figure(tag, figure, step, close=False)

    def history(self, history: list[dict]) -> None:
        """``history.csv`` (rewritten whole each epoch, atomically)."""
        if self.enabled and history:
            atomic_write_text(self.stage_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))

    def _scalars(self, scalars: dict, step: int) -> None:
        if not self.enabled:
            return
        finite = {k: float(v) for k, v in scalars.items() if v is not None and math.isfinite(float(v))}
        if self.tb is not None:
            for k, v in finite.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(finite, step=step)

    def close(self) -> None:
        """Flush and close every writer."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
        for h in list(self.log.handlers):
            h.close()
            self.log.removeHandler(h)
