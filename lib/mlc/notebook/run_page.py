"""The front page of an exported run, ``outputs/<run>/html/index.html``: what was run and on what, what came out
(every method's results, each paper's claim beside its baseline), the key figures, then the notebooks.

It is built from the files the run wrote (``params.yaml``, ``environment.json``, ``tables/*.csv`` that notebook 20
saves, ``figures/*.png``), so it needs nothing but the run folder.  Figures are embedded as small thumbnails (the
page stands alone when mailed or attached to a paper's supplement) and link to the full PNG and PDF beside it.
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import pandas as pd

from mlc.core.io import atomic_write_text

TABLES = {"results": "Results on the test split (%)", "claims": "Each paper's claim on this run"}
THUMBNAIL_WIDTH = 640

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh;
       box-sizing: border-box; }
h1 { font-size: 28px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 10px; border-bottom: 1px solid #d8dee4;
       padding-bottom: 4px; }
.meta { color: #57606a; margin: 0 0 8px; } .meta code { background: #eff1f3; padding: 1px 5px; border-radius: 4px; }
nav a { margin-right: 14px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 6px 0 4px; font-size: 14px; }
th, td { border: 1px solid #d8dee4; padding: 4px 10px; text-align: right; vertical-align: top; }
th { background: #f1f3f5; } tbody tr:nth-child(even) { background: #fafbfc; }
td.text, th.text { text-align: left; max-width: 420px; }
td.yes { color: #1a7f37; font-weight: 600; } td.no { color: #cf222e; font-weight: 600; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid #d8dee4; border-radius: 6px; padding: 8px; background: #fff; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #57606a; margin-top: 6px; }
ol.notebooks li { margin: 3px 0; }
pre { background: #f6f8fa; border: 1px solid #d8dee4; padding: 10px; overflow-x: auto; font-size: 13px; }
.note { color: #57606a; font-size: 13px; }
"""


def save_table(run_dir: Path, name: str, table: pd.DataFrame) -> Path:
    """Save a results table as ``<run>/tables/<name>.csv`` (for the front page, and for a paper's own tables)."""
    path = Path(run_dir) / "tables" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_csv())
    return path


def notebook_title(notebook: Path) -> str:
    """The first heading of a notebook (``"10 · Train Query2Label"``), else its file name."""
    try:
        cells = json.loads(notebook.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return notebook.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            text = "".join(cell.get("source", []))
            match = re.search(r"^#\s+(.+)$", text, re.MULTILINE)
            if match:
                return match.group(1).strip()
    return notebook.stem


def key_figures(figures_dir: Path, methods: list[str]) -> list[Path]:
    """The figures a reader looks at first: the data, then per method its learning curves, precision-recall
    curves and attention heatmaps (those that exist)."""
    names = ["data_samples"]
    for m in methods:
        names += [f"{m}_learning_curves", f"eval_{m}_pr_curves", f"heatmaps_{m}"]
    return [figures_dir / f"{n}.png" for n in names if (figures_dir / f"{n}.png").is_file()]


def _thumbnail(png: Path) -> str:
    """A figure as a JPEG data URI :data:`THUMBNAIL_WIDTH` pixels wide (a tenth of the PNG's bytes)."""
    from PIL import Image
    with Image.open(png) as img:
        img = img.convert("RGB")
        if img.width > THUMBNAIL_WIDTH:
            img = img.resize((THUMBNAIL_WIDTH, round(img.height * THUMBNAIL_WIDTH / img.width)), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=88, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _table_html(table: pd.DataFrame) -> str:
    """A table as HTML: numbers right-aligned with one decimal, text left-aligned, claims coloured."""
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    head = '<th class="text"></th>' + "".join(f'<th class="{"" if n else "text"}">{html.escape(str(c))}</th>'
                                              for c, n in zip(table.columns, numeric))
    rows = []
    for index, row in table.iterrows():
        cells = [f'<td class="text">{html.escape(str(index))}</td>']
        for value, is_number in zip(row, numeric):
            if pd.isna(value):
                text, cls = "—", "" if is_number else "text"
            elif is_number:
                text, cls = f"{value:.1f}", ""
            else:
                text = str(value)
                cls = "text " + {"yes": "yes", "no": "no"}.get(text, "")
            cells.append(f'<td class="{cls.strip()}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _read_table(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _relative(path: str, checkout: Path | None) -> str:
    """A path as the reader of the page knows it: relative to the kit's checkout when inside it."""
    if checkout is not None and path:
        try:
            return str(Path(path).resolve().relative_to(checkout.resolve()))
        except (ValueError, OSError):
            pass
    return path


def run_page(run_dir: Path, pages: list[Path], checkout: Path | None = None) -> str:
    """The front page's HTML for the run in ``run_dir``; ``pages``: the executed notebooks, each exported as
    ``<stem>.html`` beside the page."""
    run_dir = Path(run_dir)
    params_text = (run_dir / "params.yaml").read_text() if (run_dir / "params.yaml").is_file() else ""
    first = params_text.splitlines()[0] if params_text else ""
    source = _relative(first.removeprefix("# resolved from ").strip(), checkout) if first.startswith("#") else ""
    overrides = run_dir / "params_overrides.yaml"
    if overrides.is_file():                 # the run's own params file extends the user's one
        match = re.search(r"^extends:\s*(.+)$", overrides.read_text(), re.MULTILINE)
        if match:
            source = f"{_relative(match.group(1).strip(), checkout)} with command-line overrides"
    try:
        env = json.loads((run_dir / "environment.json").read_text())
    except (OSError, ValueError):
        env = {}

    parts = [f"<h1>Run {html.escape(run_dir.name)}</h1>"]
    meta = []
    if source:
        meta.append(f"params <code>{html.escape(source)}</code>")
    if env.get("git_commit"):
        meta.append(f"commit <code>{html.escape(str(env['git_commit'])[:12])}"
                    f"{' (uncommitted changes)' if str(env['git_commit']).endswith('+dirty') else ''}</code>")
    if env.get("time"):
        meta.append(f"started {html.escape(str(env['time']))}")
    parts.append(f'<p class="meta">{" · ".join(meta)}</p>')
    parts.append('<nav><a href="#results">Results</a><a href="#figures">Figures</a><a href="#notebooks">Notebooks</a>'
                 '<a href="#environment">Environment</a><a href="#params">Params</a></nav>')

    parts.append('<h2 id="results">Results</h2>')
    methods: list[str] = []
    found = False
    for name, title in TABLES.items():
        table = _read_table(run_dir / "tables" / f"{name}.csv")
        if table is None:
            continue
        found = True
        parts.append(f"<h3>{html.escape(title)}</h3>" + _table_html(table))
        if name == "claims" or not methods:     # the key figures: the methods with a paper's claim, else all
            methods = [str(m) for m in table.index]
    if not found:
        parts.append('<p class="note">No results tables: notebook 20 (evaluation) writes them to '
                     '<code>tables/</code> when it runs.</p>')
    else:
        parts.append('<p class="note">Baselines: the label-frequency baseline is the last column of the results; '
                     "each claim names the run it is compared with.</p>")

    parts.append('<h2 id="figures">Key figures</h2><div class="figures">')
    for png in key_figures(run_dir / "figures", methods):
        pdf = png.with_suffix(".pdf")
        links = f'<a href="../figures/{html.escape(png.name)}">PNG</a>'
        if pdf.is_file():
            links += f' · <a href="../figures/{html.escape(pdf.name)}">PDF</a>'
        parts.append(f'<figure><a href="../figures/{html.escape(png.name)}"><img alt="{html.escape(png.stem)}" '
                     f'src="{_thumbnail(png)}"></a><figcaption>{html.escape(png.stem)} · {links}</figcaption>'
                     f"</figure>")
    parts.append("</div>")

    parts.append('<h2 id="notebooks">Notebooks</h2><ol class="notebooks">')
    for nb in pages:
        parts.append(f'<li><a href="{html.escape(nb.stem)}.html">{html.escape(notebook_title(nb))}</a> '
                     f'<span class="note">{html.escape(nb.name)}</span></li>')
    parts.append("</ol>")

    parts.append('<h2 id="environment">Environment</h2>')
    flat = {k: v for k, v in env.items() if not isinstance(v, dict)}
    flat.update({f"{k} {p}": v for k, d in env.items() if isinstance(d, dict) for p, v in d.items()})
    if flat:
        rows = "".join(f'<tr><td class="text">{html.escape(str(k))}</td>'
                       f'<td class="text">{html.escape(str(v))}</td></tr>' for k, v in flat.items())
        parts.append(f'<div class="table-wrap"><table><tbody>{rows}</tbody></table></div>')
    parts.append('<h2 id="params">Params</h2><details><summary>the run\'s resolved params '
                 '(<code>params.yaml</code>)</summary>'
                 f"<pre>{html.escape(params_text)}</pre></details>")
    return (f"<!doctype html><html lang='en'><meta charset='utf-8'><meta name='viewport' "
            f"content='width=device-width, initial-scale=1'><title>{html.escape(run_dir.name)} · mlc-kit run</title>"
            f"<style>{_CSS}</style><main>{''.join(parts)}</main></html>")
