"""``mlc config PARAMS [--set KEY=VALUE ...] [--method M]``: the params a run would use, as YAML, with where each
value came from.

Defaults are filled in, ``extends`` merged, ``${env:...}`` expanded and paths resolved (against the checkout
that holds the params file; the run's CLIP, ``run:<method>`` checkpoints and embedding caches as training finds
them), exactly as ``mlc train`` would load them; nothing is read or written besides the params files.  After
each value a comment says where it came from: ``default``, ``<file>:<line>`` (the params file, or a file it
``extends``), ``command line (--set ...)``, ``command line (--output-root)``, ``$MLC_OUTPUT_ROOT``, followed by
the environment variables it was expanded from, and ``resolved`` where the value differs from the text (a
relative path made absolute, a keyword such as ``run`` replaced by what it names).
"""
from __future__ import annotations

import dataclasses
import json
import sys

import yaml

from mlc.cli.load import load_with_provenance_from_args
from mlc.config.params import ParamsError, Provenance, RunParams, names_a_file, params_to_dict
from mlc.runs.resolve import method_params, no_such_method

COMMENT_COLUMN = 56                     # comments start here, or two spaces after a longer line


def run_config(args) -> int:
    """Print the resolved params of the parsed arguments (exit 2 on a params error, 1 on an unknown method)."""
    try:
        params, provenance = load_with_provenance_from_args(args)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.method is not None and args.method not in params.methods:
        print(f"error: {no_such_method(params, args.method)}", file=sys.stderr)
        return 1
    try:
        resolved = resolved_params(params, [args.method] if args.method else list(params.methods))
    except (ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    sys.stdout.write(config_text(params, resolved, provenance, args.origins))
    return 0


def resolved_params(params: RunParams, methods: list[str]) -> RunParams:
    """``params`` with ``methods`` only, every path resolved against the params' checkout and each method's
    references resolved (:func:`mlc.runs.resolve.method_params`): what a run of them uses."""
    path = (lambda v: str(params.resolve_path(v)) if v else v)
    data = dataclasses.replace(params.data, manifest=path(params.data.manifest), raw_root=path(params.data.raw_root),
                               root=str(params.dataset_root()) if params.data.dataset == "toy" else
                               path(params.data.root))
    changes = dict(output_root=path(params.output_root), data=data,
                   text=dataclasses.replace(params.text, glove_path=path(params.text.glove_path)),
                   methods={m: method_params(params, m) for m in methods})
    if params.clip is not None and names_a_file(params.clip.pretrained):
        changes["clip"] = dataclasses.replace(params.clip, pretrained=path(params.clip.pretrained))
    if params.released is not None:
        changes["released"] = dataclasses.replace(params.released, checkpoint=path(params.released.checkpoint),
                                                  config=path(params.released.config))
    return dataclasses.replace(params, **changes)


def config_text(params: RunParams, resolved: RunParams, provenance: Provenance, origins: bool = True) -> str:
    """The YAML of ``resolved`` (which loads back to its values), after a header, each value followed by where it
    came from (unless ``origins`` is false)."""
    chain = provenance.files
    head = [f"# mlc config {params.source}: the params a run uses (defaults filled in, extends merged, ${{env:...}} "
            f"expanded, paths resolved against {params.base_dir})",
            f"# files: {chain[0]}" + "".join(f", which extends {f}" for f in chain[1:]),
            f"# run folder: {resolved.run_dir}"]
    if set(resolved.methods) != set(params.methods):
        head.append(f"# methods shown: {', '.join(resolved.methods)} (of {', '.join(params.methods)})")
    rows: list[tuple[str, str | None]] = []
    _rows(params_to_dict(resolved), params_to_dict(params), "", 0, provenance, rows)
    width = min(max(len(text) for text, _ in rows), COMMENT_COLUMN)
    lines = [text if not origins or where is None else f"{text.ljust(width)}  # {where}" for text, where in rows]
    return "\n".join(head + lines) + "\n"


def _rows(node: dict, raw, prefix: str, depth: int, provenance: Provenance, rows: list) -> None:
    """One (YAML line, origin) per key; a non-empty mapping is a line of its own with its keys below it."""
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        before = raw.get(key) if isinstance(raw, dict) else None
        text = f"{'  ' * depth}{_flow(key)}:"
        if isinstance(value, dict) and value:
            rows.append((text, None))
            _rows(value, before, dotted, depth + 1, provenance, rows)
        else:
            where = provenance.of(dotted) + (", resolved" if value != before else "")
            rows.append((f"{text} {_flow(value)}", where))


def _flow(value) -> str:
    """``value`` as one line of YAML (flow style) that reads back to it."""
    if isinstance(value, str) and ("\n" in value or not value.isprintable()):
        return json.dumps(value)                      # a JSON string is a YAML double-quoted scalar
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 30, allow_unicode=True).strip()[1:-1]
