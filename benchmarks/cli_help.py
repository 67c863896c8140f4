"""How long ``mlc --help`` and each subcommand's ``--help`` take, as a user types them (a fresh process each).

    python benchmarks/cli_help.py [--repeat 5]      # prints a table; writes benchmarks/results_cli_help.json

The parser imports no torch (tests/test_cli.py checks that); this measures what that buys.
"""
import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [["--help"], ["--version"], ["train", "--help"], ["evaluate", "--help"], ["predict", "--help"],
            ["config", "--help"], ["embeddings", "--help"], ["run-all", "--help"], ["weights", "--help"],
            ["launch", "--help"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for command in COMMANDS:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mlc.cli", *command], capture_output=True, check=True, cwd=ROOT)
            times.append(time.perf_counter() - t0)
        rows.append({"command": "mlc " + " ".join(command), "median_s": round(statistics.median(times), 3),
                     "min_s": round(min(times), 3)})
        print(f"{rows[-1]['command']:<26} median {rows[-1]['median_s']:.3f} s  (min {rows[-1]['min_s']:.3f} s)")
    out = {"python": platform.python_version(), "machine": platform.processor() or platform.machine(),
           "repeat": args.repeat, "rows": rows}
    (ROOT / "benchmarks" / "results_cli_help.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
