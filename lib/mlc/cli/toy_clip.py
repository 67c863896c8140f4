"""``python -m mlc.cli.toy_clip``: train the toy CLIP of ``params/toy.yaml`` and write the file the kit ships
(``--check``: train it again and compare).  See :mod:`mlc.runs.toy_clip`."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mlc.config.params import find_checkout, load_params
from mlc.runs import toy_clip
from mlc.runs.data import prepare_data


def main(argv: list[str] | None = None) -> int:
    """``python -m mlc.cli.toy_clip``: train the toy CLIP of the params and write the shipped file;
    ``--check``: train it again in a temporary folder and compare with the shipped file."""
    parser = argparse.ArgumentParser(prog=toy_clip.COMMAND, description=toy_clip.__doc__.split("\n\n")[0])
    checkout = find_checkout(Path(toy_clip.__file__)) or Path.cwd()
    parser.add_argument("--params", default=str(checkout / toy_clip.SHIPPED_PARAMS),
                        help=f"the params file (default: the checkout's {toy_clip.SHIPPED_PARAMS})")
    parser.add_argument("--out", default=str(toy_clip.SHIPPED_CLIP),
                        help="the file to write or check (default: the shipped one)")
    parser.add_argument("--check", action="store_true", help="train again and compare with --out (writes nothing)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(args.params, output_root=tmp)
        manifest = prepare_data(params)
        record = toy_clip.train_toy_clip(params, manifest, use_shipped=False)
        if not args.check:
            provenance = toy_clip.ship(params, record, args.out)
            print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB, key {provenance['key']}, "
                  f"{record['seconds']:.0f} s of training)")
            return 0
        shipped = toy_clip.shipped_provenance(args.out)
        same = record["state_sha256"] == shipped["state_sha256"]
        same_kind = record["cpu_kind"] == shipped["cpu_kind"]
        print(json.dumps({"identical": same, "same_cpu_kind": same_kind, "key": [record["key"], shipped["key"]],
                          "final_train_loss": [record["history"][-1]["train_loss"],
                                               shipped["history"][-1]["train_loss"]]}, indent=1))
        return 0 if same or not same_kind else 1


if __name__ == "__main__":
    sys.exit(main())
