"""The run's front page (``outputs/<run>/html/index.html``) and the tables notebook 20 saves for it."""
import json
from html.parser import HTMLParser

import matplotlib
import pandas as pd
import pytest
from conftest import ROOT

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mlc.notebook.run_page import key_figures, notebook_title, run_page, save_table  # noqa: E402


class _Page(HTMLParser):
    """What a reader sees: headings, table cells (with their class), images and links."""

    def __init__(self):
        super().__init__()
        self.headings, self.cells, self.images, self.links, self._tag, self._cls = [], [], [], [], None, ""
        self.text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag, self._cls = tag, attrs.get("class") or ""
        if tag == "img":
            self.images.append(attrs)
        if tag == "a":
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        self.text.append(data)
        if self._tag in ("h1", "h2", "h3"):
            self.headings.append(data.strip())
        if self._tag == "td":
            self.cells.append((data.strip(), self._cls))


def _figure(path):
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot([0, 1], [1, 0])
    fig.savefig(path.with_suffix(".png"))
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


@pytest.fixture
def run_folder(tmp_path):
    run = tmp_path / "outputs" / "toy_ci"
    (run / "figures").mkdir(parents=True)
    (run / "notebooks").mkdir()
    (run / "params.yaml").write_text(f"# resolved from {run / 'params_overrides.yaml'}\nname: toy_ci\nseed: 0\n")
    (run / "params_overrides.yaml").write_text(f"# with overrides\nextends: {ROOT / 'params' / 'toy_ci.yaml'}\n")
    (run / "environment.json").write_text(json.dumps({"python": "3.11.7", "packages": {"torch": "2.14.1"},
                                                      "git_commit": "0123456789abcdef+dirty", "cpu_threads": 1,
                                                      "time": "2026-12-02 19:32:34"}))
    results = pd.DataFrame({"mAP": [40.16, 23.6], "CF1": [float("nan"), 12.34], "baseline mAP": [17.0, 17.0]},
                           index=pd.Index(["q2l", "q2l_linear"]))
    save_table(run, "results", results)
    claims = pd.DataFrame({"method": ["q2l", "salgl"], "paper's claim": ["beats linear", "scenes help"],
                           "method value": [40.2, None], "compared with": ["q2l_linear 23.6", ""],
                           "holds here": ["yes", "no"]}).set_index("method")
    save_table(run, "claims", claims)
    for name in ("data_samples", "q2l_learning_curves", "eval_q2l_pr_curves", "salgl_learning_curves",
                 "eval_q2l_linear_pr_curves", "unrelated_figure"):
        _figure(run / "figures" / name)
    nb = {"cells": [{"cell_type": "markdown", "source": ["# 10 · Train Query2Label\n", "text"]}], "metadata": {},
          "nbformat": 4, "nbformat_minor": 5}
    (run / "notebooks" / "10_train_q2l.ipynb").write_text(json.dumps(nb))
    return run


def test_the_front_page_shows_params_commit_results_claims_figures_notebooks_and_environment(run_folder):
    pages = sorted((run_folder / "notebooks").glob("*.ipynb"))
    text = run_page(run_folder, pages, checkout=ROOT)
    page = _Page()
    page.feed(text)
    body = " ".join(page.text)
    assert page.headings[:1] == ["Run toy_ci"]
    for section in ("Results", "Key figures", "Notebooks", "Environment", "Params"):
        assert section in page.headings
    # the params file as the checkout knows it, never a machine path; the commit, marked as dirty
    assert "params/toy_ci.yaml with command-line overrides" in body and str(ROOT) not in body
    assert "0123456789ab (uncommitted changes)" in body
    # every method's results with one decimal, a missing value as a dash, the baseline column
    assert ("q2l", "text") in page.cells and ("40.2", "") in page.cells
    assert ("—", "") in page.cells and ("12.3", "") in page.cells and "baseline mAP" in body
    # each paper's claim, coloured by whether it holds
    assert ("yes", "text yes") in page.cells and ("no", "text no") in page.cells
    # key figures: the data, then those of the methods with a claim (not every figure), each linking to PNG and PDF
    shown = [img["alt"] for img in page.images]
    assert shown == ["data_samples", "q2l_learning_curves", "eval_q2l_pr_curves", "salgl_learning_curves"]
    assert all(img["src"].startswith("data:image/jpeg;base64,") for img in page.images)
    assert "../figures/q2l_learning_curves.pdf" in page.links
    # notebooks by their titles, linking to the exported pages
    assert "10_train_q2l.html" in page.links and "10 · Train Query2Label" in body
    assert "torch" in body and "2.14.1" in body and "name: toy_ci" in body


def test_thumbnails_are_small_and_the_tables_round_trip(run_folder):
    text = run_page(run_folder, [], checkout=None)
    assert len(text) < 200_000                       # four figures embedded as thumbnails, not full pages
    table = pd.read_csv(run_folder / "tables" / "claims.csv", index_col=0)
    assert list(table.index) == ["q2l", "salgl"] and table.loc["q2l", "holds here"] == "yes"


def test_a_run_without_tables_says_which_notebook_writes_them(tmp_path):
    (tmp_path / "run").mkdir()
    text = run_page(tmp_path / "run", [])
    assert "notebook 20 (evaluation) writes them" in text and "<img" not in text


def test_notebook_titles_and_key_figure_order(tmp_path):
    assert notebook_title(ROOT / "notebooks" / "10_train_q2l.ipynb").startswith("10")
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert notebook_title(tmp_path / "broken.ipynb") == "broken"
    for name in ("heatmaps_sgre", "sgre_learning_curves"):
        _figure(tmp_path / name)
    assert [p.stem for p in key_figures(tmp_path, ["sgre"])] == ["sgre_learning_curves", "heatmaps_sgre"]
