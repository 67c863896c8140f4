"""What a training stage writes for people and their tools, beside ``history.jsonl``:

* ``train.log``: every line the terminal shows, with timestamps (Python ``logging``);
* ``history.csv``: one row per epoch, as timm's ``summary.csv`` (pandas);
* ``tensorboard/``: TensorBoard scalars, per step (losses, learning rates) and per epoch (validation
  metrics of the live and EMA weights, and the final test metrics): ``tensorboard --logdir outputs``;
* Weights & Biases, only when the params ask for it (``log.wandb: true``) and ``wandb`` is installed.

Only the main process writes.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pandas as pd

from mlc.core.io import atomic_write_text


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
            self.tb = SummaryWriter(str(self.stage_dir / "tensorboard"))
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
        """Per-epoch scalars: every number of the epoch's record (val mAP and loss of live / EMA, ...)."""
        scalars = {}
        for key, value in record.items():
            if key == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            split, _, rest = key.partition("_")
            name = f"{split}/{rest}" if split in ("val", "test") and rest else f"epoch/{key}"
            scalars[name] = value
        self._scalars(scalars, global_step)

    def test(self, metrics: dict, global_step: int) -> None:
        """The final test metrics of the selected checkpoint."""
        self._scalars({f"test/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))
                       and not isinstance(v, bool)}, global_step)

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
