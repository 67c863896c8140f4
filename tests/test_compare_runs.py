"""scripts/compare_runs.py, which showed the layer move to change no number: it must see a change of one bit."""
import json
import subprocess
import sys

import numpy as np
import torch
from conftest import ROOT


def _run(root, score=0.25, extra=None):
    (root / "q2l" / "checkpoints").mkdir(parents=True)
    result = {"test": {"mAP": score, "per_class_AP": [0.5, float("nan")]}, "history": [{"train_seconds": 1.0}]}
    (root / "q2l" / "result.json").write_text(json.dumps({**result, **(extra or {})}))
    np.savez(root / "q2l" / "test_scores.npz", scores=np.array([[score, 0.5]]), targets=np.array([[1, 0]]))
    torch.save({"model": {"w": torch.full((2,), score)}}, root / "q2l" / "checkpoints" / "best.pt")


def _compare(a, b):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_runs.py"), str(a), str(b)],
                          capture_output=True, text=True, timeout=120)


def test_identical_runs_pass_and_one_changed_number_fails(tmp_path):
    _run(tmp_path / "a")
    _run(tmp_path / "b", extra={"cpu_threads": 2})                         # times differ anyway; a new key is noted
    same = _compare(tmp_path / "a", tmp_path / "b")
    assert same.returncode == 0 and "3 result files identical, 0 differ" in same.stdout
    assert "keys only the new run records: cpu_threads" in same.stdout
    _run(tmp_path / "c", score=0.25 + 1e-6)
    changed = _compare(tmp_path / "a", tmp_path / "c")
    assert changed.returncode == 1 and "0 result files identical, 3 differ" in changed.stdout
