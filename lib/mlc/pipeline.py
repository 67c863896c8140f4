"""Execute the notebooks in order through papermill for one params file.

    python -m mlc.pipeline params/toy.yaml            (what run_all.sh calls)

The notebooks run in name order; a training notebook ``1x_train_<method>`` runs only when the
params file configures that method.  Executed copies go to ``outputs/<run name>/notebooks/``.  The
first failing notebook stops the run with exit code 1 and a message naming it and its executed copy.
At the end every executed notebook is exported to HTML (``outputs/<run name>/html/``, with an
``index.html``), so a whole run can be browsed without Jupyter.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

from .cliargs import add_run_all_arguments
from .notebook import repo_root
from .params import ParamsError, load_params
from .progress import PROGRESS_ENV, duration


def notebooks_for(params, root: Path) -> list[Path]:
    """The notebooks of a run in name order; a training notebook only when the params configure its method."""
    out = []
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        m = re.match(r"\d\d_train_(\w+)\.ipynb$", nb.name)
        if m and m.group(1) not in params.methods:
            continue
        out.append(nb)
    return out


def _params_with_overrides(params_path: Path, params, set_args: list[str], output_root: str | None) -> Path:
    """A params file for the notebooks that extends ``params_path`` with the command-line overrides."""
    import yaml

    from .params import parse_set_args
    over, _ = parse_set_args(set_args)
    if output_root:
        over["output_root"] = str(Path(output_root).resolve())
    path = params.run_dir / "params_overrides.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    from .io import atomic_write_text
    atomic_write_text(path, f"# {params_path} with the overrides of the command line\n" +
                      yaml.safe_dump({"extends": str(params_path), **over}, sort_keys=False))
    return path


def run_all(params_file: str | Path, only: list[str] | None = None, set_args: list[str] | None = None,
            output_root: str | None = None) -> int:
    """Execute the notebooks for one params file (see the module docstring); returns the exit code."""
    import papermill as pm
    root = repo_root()
    params_path = Path(params_file).resolve()
    try:
        params = load_params(params_path, set_args=set_args, output_root=output_root)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    notebooks = notebooks_for(params, root)
    if only:
        chosen = [nb for nb in notebooks if any(o in nb.name for o in only)]
        unmatched = [o for o in only if not any(o in nb.name for nb in notebooks)]
        if unmatched:
            print(f"error: --only {' '.join(unmatched)} matches no notebook of this run "
                  f"({', '.join(nb.name for nb in notebooks)})", file=sys.stderr)
            return 2
        notebooks = chosen
    if set_args or output_root:
        params_path = _params_with_overrides(params_path, params, set_args or [], output_root)
    out_dir = params.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    # the kernels inherit this: epoch lines instead of bars, which papermill streams here as they come
    os.environ[PROGRESS_ENV] = "lines"
    _stream_notebook_output()
    t_all = time.time()
    for i, nb in enumerate(notebooks, 1):
        target = out_dir / nb.name
        t0 = time.time()
        print(f">> [{i}/{len(notebooks)}] {nb.relative_to(root)} ({duration(time.time() - t_all)} so far)", flush=True)
        try:
            pm.execute_notebook(str(nb), str(target), parameters={"params_file": str(params_path)},
                                cwd=str(root), kernel_name="python3", progress_bar=False, log_output=True)
        except Exception as e:  # papermill raises PapermillExecutionError, nbclient errors, ...
            print(f"\nFAILED: notebook {nb.relative_to(root)}\n  executed copy (with the error): {target}\n"
                  f"  {_error_text(e)}", file=sys.stderr)
            return 1
        print(f"   done in {time.time() - t0:.0f} s -> {target}", flush=True)
    print(f"all {len(notebooks)} notebooks done in {time.time() - t_all:.0f} s; outputs in {params.run_dir}")
    index = export_html(out_dir, params.run_dir / "html")
    print(f"HTML: {index}")
    return 0


# the progress lines worth a terminal: "[q2l] epoch 3/12 ... ETA 1m40s", "[toy CLIP] epoch ...", resume notes
_PROGRESS_LINE = re.compile(r"^\[[^\]]+\] |^resuming |^early stop")


class _ProgressLines(logging.Handler):
    """Prints the progress lines among what papermill logs of the notebooks' outputs."""

    def emit(self, record):
        for line in record.getMessage().splitlines():
            if _PROGRESS_LINE.match(line.strip()):
                print("   " + line.strip(), flush=True)


def _stream_notebook_output() -> None:
    """Show the notebooks' progress lines (from papermill's ``log_output``) on the terminal as they come."""
    log = logging.getLogger("papermill")
    if not any(isinstance(h, _ProgressLines) for h in log.handlers):
        log.addHandler(_ProgressLines())
        log.setLevel(logging.INFO)
        log.propagate = False


def _error_text(e: Exception) -> str:
    """The whole error of a failed cell (a run conflict lists its differences on several lines)."""
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename is not None and evalue is not None:
        return f"{ename}: {evalue}".replace("\n", "\n  ")
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"


def export_html(notebook_dir: Path, html_dir: Path) -> Path:
    """Every executed notebook as a standalone HTML page (figures embedded), plus an index page."""
    import html

    from nbconvert import HTMLExporter

    from .io import atomic_write_text
    html_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter()
    pages = []
    for nb in sorted(notebook_dir.glob("*.ipynb")):
        body, _ = exporter.from_filename(str(nb))
        atomic_write_text(html_dir / f"{nb.stem}.html", body)
        pages.append(nb.stem)
    links = "".join(f'<li><a href="{html.escape(p)}.html">{html.escape(p)}</a></li>' for p in pages)
    index = html_dir / "index.html"
    atomic_write_text(index, f"<!doctype html><meta charset='utf-8'><title>{html.escape(str(notebook_dir.parent.name))}"
                             f"</title><h1>Run {html.escape(notebook_dir.parent.name)}</h1><ul>{links}</ul>")
    return index


def main(argv=None) -> None:
    """``python -m mlc.pipeline PARAMS [--only ...] [--set ...]`` (what run_all.sh calls)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_all_arguments(ap)
    args = ap.parse_args(argv)
    sys.exit(run_all(args.params, args.only, args.set_args, args.output_root))


if __name__ == "__main__":
    main()
