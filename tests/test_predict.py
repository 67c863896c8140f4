"""The predictor's input handling (the notebook test runs it on trained models end to end)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlc.evaluation.predict import Predictor, _expand


def test_images_from_files_folders_and_pil_images(tmp_path):
    for i in range(2):
        Image.new("RGB", (20, 10), (i * 100, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    got = _expand([tmp_path, tmp_path / "1.png", Image.new("L", (5, 5))])
    assert [s.rsplit("/", 1)[-1] for s, _ in got] == ["0.png", "1.png", "1.png", "<image 3>"]
    assert all(img.mode == "RGB" for _, img in got)
    with pytest.raises(FileNotFoundError, match="nowhere.jpg: no such image file or folder"):
        _expand(tmp_path / "nowhere.jpg")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no image files"):
        _expand(empty)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="bad.jpg: cannot decode image"):
        _expand(tmp_path / "bad.jpg")


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([3.0, -3.0, 0.0]))

    def forward(self, x):
        b = len(x)
        return {"logits": self.w.repeat(b, 1), "attention": torch.rand(b, 3, 2, 2)}


def test_top_k_threshold_and_closed_vocabulary():
    pred = Predictor(_Toy(), ["a", "b", "c"], lambda img: torch.zeros(3, 4, 4))
    out = pred([Image.new("RGB", (4, 4))] * 3, top_k=2, batch_size=2)
    assert len(out) == 3 and out[0].labels == ["a", "c"] and out[0].maps.shape == (2, 2, 2)
    assert np.isclose(out[0].probs[0], 1 / (1 + np.exp(-3)))
    assert pred([Image.new("RGB", (4, 4))], top_k=3, threshold=0.6)[0].labels == ["a"]
    with pytest.raises(ValueError, match="closed-set model"):
        pred.set_labels(["d"])


def test_heatmaps_one_png_per_image_and_label_and_json_records(tmp_path):
    from mlc.evaluation.predict import prediction_records, save_heatmaps
    pred = Predictor(_Toy(), ["a", "b c", "d/e"], lambda img: torch.zeros(3, 4, 4))
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):                                      # two images of the same name
        Image.new("RGB", (64, 32), (200, 0, 0)).save(tmp_path / folder / "photo.png")
    out = pred([tmp_path / "x" / "photo.png", tmp_path / "y" / "photo.png"], top_k=None)
    assert [p.labels for p in out] == [["a", "d/e", "b c"]] * 2                   # top_k None: every label
    paths = save_heatmaps(out, tmp_path / "maps")
    assert [[p.name for p in row] for row in paths] == [
        ["photo_1_a.png", "photo_2_d_e.png", "photo_3_b_c.png"], ["photo-2_1_a.png", "photo-2_2_d_e.png",
                                                                 "photo-2_3_b_c.png"]]
    with Image.open(paths[0][0]) as img:
        assert img.size == (256, 128) and img.mode == "RGB"                     # small images brought to 256
    records = prediction_records(out, paths)
    assert records[0]["image"] == str(tmp_path / "x" / "photo.png")
    assert records[0]["labels"][0] == {"label": "a", "score": round(1 / (1 + np.exp(-3)), 6),
                                       "heatmap": str(paths[0][0])}


# ---------------------------------------------------------------------------------- mlc predict / python -m mlc.predict
def _tiny(tmp_path):
    """toy_ci over a 16 / 8 / 8 image world in tmp_path, and the --set / --output-root that say so."""
    from conftest import ROOT
    opts = ["--set", f"data.root={tmp_path / 'world'}", "data.toy={n_train: 16, n_val: 8, n_test: 8}",
            "--output-root", str(tmp_path / "out")]
    return str(ROOT / "params" / "toy_ci.yaml"), opts


def test_mlc_predict_with_a_checkpoint_prints_labels_scores_json_and_heatmaps(tmp_path, monkeypatch, capsys):
    """``python -m mlc.predict`` (= ``mlc predict``) from another folder, image paths relative to it, weights from
    a kit checkpoint (a freshly built model: no training needed)."""
    import json
    import subprocess
    import sys

    from mlc.config.params import load_params
    from mlc.core.registry import create_model
    from mlc.runs.data import prepare_data
    from mlc.runs.resolve import method_params
    params_file, opts = _tiny(tmp_path)
    params = load_params(params_file, set_args=opts[1:3], output_root=opts[4])
    manifest = prepare_data(params, progress=False)
    mp = method_params(params, "q2l")
    names = [manifest.label_names[i] for i in manifest.label_subset(mp.label_subset)]    # the objects, not the tags
    torch.save(create_model(mp.model_name, mp.model, len(names), label_names=names).state_dict(), tmp_path / "q2l.pt")
    here = tmp_path / "here"
    here.mkdir()
    Image.open(manifest.image_root / manifest.split("test")["image"].iloc[0]).save(here / "one.png")
    done = subprocess.run([sys.executable, "-m", "mlc.predict", params_file, "--method", "q2l", "one.png", *opts,
                           "--checkpoint", "../q2l.pt", "--top-k", "2", "--json", "--heatmaps", "maps"],
                          cwd=here, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["method"] == "q2l" and out["weights"]["kind"] == "kit checkpoint"
    assert out["weights"]["checkpoint"] == str(tmp_path / "q2l.pt")
    [image] = out["predictions"]
    assert image["image"] == "one.png" and len(image["labels"]) == 2
    assert all(e["label"] in manifest.label_names and 0 <= e["score"] <= 1 for e in image["labels"])
    assert image["labels"][0]["score"] >= image["labels"][1]["score"]
    assert sorted(p.name for p in (here / "maps").iterdir()) == sorted(Path(e["heatmap"]).name
                                                                     for e in image["labels"])
    from mlc.cli.predict import main
    monkeypatch.chdir(here)                                                     # text, in this process
    assert main([params_file, "one.png", *opts, "--method", "q2l", "--checkpoint", "../q2l.pt",
                 "--threshold", "0.999"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text == [f"q2l: kit checkpoint weights ({tmp_path / 'q2l.pt'}); top 5 with score >= 0.999", "one.png",
                    "  (no label with a score >= 0.999)"]


def test_mlc_predict_names_a_missing_or_corrupt_image_and_an_unfinished_run(tmp_path, monkeypatch, capsys):
    from mlc.cli.predict import main
    params_file, opts = _tiny(tmp_path)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")

    def error(*argv):
        monkeypatch.chdir(tmp_path)                     # loading the params moves to their checkout
        code = main([params_file, *argv, *opts])
        return code, capsys.readouterr().err
    assert error("--method", "q2l", "ok.png", "gone.png") == (1, "error: gone.png: no such image file or folder\n")
    code, err = error("--method", "q2l", "ok.png", "bad.jpg")
    assert code == 1 and err.startswith("error: bad.jpg: cannot decode image")
    code, err = error("--method", "q2l", "ok.png")                               # never trained
    assert code == 1 and f"{tmp_path / 'out' / 'toy_ci' / 'q2l'}: 'q2l' has not been trained" in err
    (tmp_path / "out" / "toy_ci" / "q2l" / "checkpoints").mkdir(parents=True)
    (tmp_path / "out" / "toy_ci" / "q2l" / "checkpoints" / "last.pt").write_bytes(b"")
    code, err = error("--method", "q2l", "ok.png")                               # interrupted
    assert code == 1 and "this run has not finished training (it was interrupted)" in err
    code, err = error("ok.png")                                                  # several methods, none finished
    assert code == 1 and "name a method with --method (no finished run in" in err
    code, err = error("--method", "q2k", "ok.png")
    assert code == 1 and "no method 'q2k'" in err
    assert not (tmp_path / "world").exists()                                    # no data was read for any of it
