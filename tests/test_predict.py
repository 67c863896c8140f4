"""The predictor's input handling (the notebook test runs it on trained models end to end)."""
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
