"""The summary of a gpu_check.sh run: ``gpu_check.json`` (everything) and ``gpu_check.md`` (the tables that go
into docs/performance.md).

    python benchmarks/gpu_report.py OUT_DIR '{"part": {"exit": 0, "seconds": 12}, ...}'
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _pytest_summary(log: Path) -> str | None:
    if not log.is_file():
        return None
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", log.read_text(), re.M)
    return found[-1] if found else None


def report(out: Path, parts: dict) -> dict:
    summary = {"parts": parts, "env": _load(out / "env.json"), "train_step": _load(out / "train_step.json"),
               "rehearsal": _load(out / "rehearsal.json"),
               "tests": {name: _pytest_summary(out / "logs" / f"{name}.log") for name in ("gpu_tests", "oracle_cuda")}}
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    lines = []
    env = summary["env"] or {}
    gpus = ", ".join(g["name"] for g in env.get("gpus", [])) or "no GPU"
    lines += [f"Machine: {gpus}; torch {env.get('torch')} (CUDA {env.get('cuda_build')}), Python {env.get('python')}.",
              ""]
    lines += ["| part | exit | seconds | result |", "|---|---|---|---|"]
    for name, p in parts.items():
        lines.append(f"| {name} | {p['exit']} | {p['seconds']} | {summary['tests'].get(name) or ''} |")
    ts = summary["train_step"]
    if ts:
        rows = [r for r in ts["rows"] if "error" not in r]
        base = {r["method"]: r["seconds_per_step"] for r in rows if r["mode"] == "baseline"}
        batch, steps = (rows[0]["batch"], rows[0]["steps"]) if rows else ("?", "?")
        lines += ["", f"Training step at the paper configs (random init, synthetic batch of {batch}; median of "
                      f"{steps} steps):", "",
                  "| method | mode | precision | s/step | images/s | vs fp32 baseline | peak GB |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            speedup = base.get(r["method"], float("nan")) / r["seconds_per_step"]
            lines.append(f"| {r['method']} | {r['mode']} | {r['autocast']} | {r['seconds_per_step']:.3f} | "
                         f"{r['images_per_second']:.0f} | {speedup:.2f}x | {r.get('peak_memory_gb', '')} |")
        for r in ts["rows"]:
            if "error" in r:
                lines.append(f"| {r['method']} | {r['mode']} | error: {r['error'][:120]} | | | | |")
    rh = summary["rehearsal"]
    if rh:
        lines += ["", "Rehearsal (COCO layout, mlc.train at the paper configs; random CLIP, stand-in ResNet with "
                      "measured BatchNorm statistics):", "",
                  "| method | amp | batch | steps/epoch | s/step (epoch 2) | s/step (epoch 1) | test mAP | peak GB | "
                  "wall s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rh["rows"]:
            if "error" in r:
                lines.append(f"| {r['method']} | {r.get('amp', '')} | error: {r['error'][-200:]!r} | | | | | | |")
                continue
            peak = r.get("peak_gpu_memory_gb", r.get("max_rss_gb_any_child", ""))
            lines.append(f"| {r['method']} | {r.get('amp', '')} | {r['batch']} | {r['steps_per_epoch']} | "
                         f"{r['seconds_per_step']} | {r['first_epoch_seconds_per_step']} | "
                         f"{100 * r['test_mAP']:.1f} | {peak} | {r['wall_seconds']} |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    report(Path(sys.argv[1]), json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
