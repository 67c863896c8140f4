"""Parameter counts of every paper configuration (the numbers quoted in docs/methods and the issue notes).

    python benchmarks/param_counts.py

Models are built without pretrained weights (shapes only; the closed-set ones on the meta device) with the
class count of their dataset (training labels: the seen ones for open-vocabulary methods).  "trained" counts
what the engine optimises after the params' ``train.freeze`` rules.
"""
from __future__ import annotations

import logging
from pathlib import Path

from mlc.config.params import load_params
from mlc.engine.optim import build_param_groups
from mlc.runs.build import DATASET_CLASSES, untrained_method


def count(params_file: Path) -> list[dict]:
    params = load_params(params_file)
    n = DATASET_CLASSES[params.data.source]
    rows = []
    for name, mp in params.methods.items():
        on_meta = not hasattr(mp.model, "clip_model")          # open_clip moves models, which meta cannot
        model = untrained_method(mp, n, on_meta=on_meta).model
        trained = sum(p.numel() for g in build_param_groups(model, mp.train) for p in g["params"])
        rows.append({"params": str(params_file), "method": name, "classes": n,
                     "total (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                     "trained (M)": round(trained / 1e6, 2)})
    return rows


def main() -> None:
    import pandas as pd
    logging.disable(logging.WARNING)
    root = Path(__file__).resolve().parents[1]
    files = sorted(f for d in ("q2l", "salgl", "sgre", "mkt", "qks") for f in (root / "params" / d).glob("*.yaml"))
    rows = [r for f in files for r in count(f.relative_to(root))]
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
