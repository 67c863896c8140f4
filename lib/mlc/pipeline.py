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
import re
import sys
import time
from pathlib import Path

from .notebook import repo_root
from .params import ParamsError, load_params


def notebooks_for(params, root: Path) -> list[Path]:
    out = []
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        m = re.match(r"\d\d_train_(\w+)\.ipynb$", nb.name)
        if m and m.group(1) not in params.methods:
            continue
        out.append(nb)
    return out


def run_all(params_file: str | Path, only: list[str] | None = None) -> int:
    import papermill as pm
    root = repo_root()
    params_path = Path(params_file).resolve()
    try:
        params = load_params(params_path)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = root / params.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = notebooks_for(params, root)
    if only:
        notebooks = [nb for nb in notebooks if any(o in nb.name for o in only)]
    t_all = time.time()
    for nb in notebooks:
        target = out_dir / nb.name
        t0 = time.time()
        print(f">> {nb.relative_to(root)}", flush=True)
        try:
            pm.execute_notebook(str(nb), str(target), parameters={"params_file": str(params_path)},
                                cwd=str(root), kernel_name="python3", progress_bar=False)
        except Exception as e:  # papermill raises PapermillExecutionError, nbclient errors, ...
            print(f"\nFAILED: notebook {nb.relative_to(root)}\n  executed copy (with the error): {target}\n"
                  f"  {_error_text(e)}", file=sys.stderr)
            return 1
        print(f"   done in {time.time() - t0:.0f} s -> {target}", flush=True)
    print(f"all {len(notebooks)} notebooks done in {time.time() - t_all:.0f} s; outputs in {params.run_dir}")
    index = export_html(out_dir, root / params.run_dir / "html")
    print(f"HTML: {index}")
    return 0


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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("params", nargs="?", default="params/toy.yaml")
    ap.add_argument("--only", nargs="*", help="run only the notebooks whose names contain one of these")
    args = ap.parse_args(argv)
    sys.exit(run_all(args.params, args.only))


if __name__ == "__main__":
    main()
