import hashlib
import warnings

import numpy as np
from PIL import Image

from mlc.data.toyworld import SCENES, ToyWorldConfig, build_structure, generate
from mlc.notebook.figures import conditional_cooccurrence


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    cfg = ToyWorldConfig(n_train=12, n_val=4, n_test=4)
    a = generate(tmp_path / "a", cfg, progress=False)
    b = generate(tmp_path / "b", cfg, progress=False)
    c = generate(tmp_path / "c", ToyWorldConfig(seed=1, n_train=12, n_val=4, n_test=4), progress=False)
    assert _digest(a.root) == _digest(b.root)
    assert _digest(a.root) != _digest(c.root)


def test_reuse_and_refuse_other_config(tmp_path):
    cfg = ToyWorldConfig(n_train=6, n_val=2, n_test=2)
    generate(tmp_path / "w", cfg, progress=False)
    generate(tmp_path / "w", cfg, progress=False)  # same config: reused
    try:
        generate(tmp_path / "w", ToyWorldConfig(n_train=7, n_val=2, n_test=2), progress=False)
    except FileExistsError as e:
        assert str(tmp_path / "w") in str(e)
    else:
        raise AssertionError("a world made from another config was silently overwritten")


def test_labels_split_and_words():
    s = build_structure(ToyWorldConfig())
    n = len(s.labels)
    assert 20 <= n <= 40
    assert 0.2 <= (~s.seen).mean() <= 0.3
    seen_words = {w for i in np.flatnonzero(s.seen) for w in s.labels[i]}
    for i in np.flatnonzero(~s.seen):
        assert set(s.labels[i]) <= seen_words, f"unseen label {s.names[i]} has a word no seen label has"
    assert 4 <= len(SCENES) <= 6
    # every scene has its own prior
    assert len({tuple(p.round(3)) for p in s.scene_prior}) == len(SCENES)


def test_world_content(tiny_world):
    m = tiny_world
    df = m.split("train")
    t = m.dense_targets("train")
    card = (t == 1).sum(1)
    assert card.min() >= 1 and card.max() <= 4 and 1.5 <= card.mean() <= 2.8
    for _, row in df.iterrows():
        boxes = np.array(row["boxes"].tolist())
        assert len(boxes) == len(row["box_labels"]) and set(row["box_labels"]) == set(row["pos"])
        assert (boxes >= 0).all() and (boxes <= 1).all() and (boxes[:, 2] > boxes[:, 0]).all()
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert (side < 0.5).all(), "objects must be small"
        for lab in row["pos"]:
            assert m.label_names[lab] in row["caption"]
        assert any(p in row["caption"] for p in ("beach", "forest", "city", "snow", "night"))
    assert set(m.split_names) == {"train", "val", "test"}
    assert len(m.split("val")) == 20 and len(m.split("test")) == 30


def test_cooccurrence_depends_on_scene(tmp_path):
    m = generate(tmp_path / "w", ToyWorldConfig(n_train=1500, n_val=2, n_test=2), progress=False)
    df, t = m.split("train"), m.dense_targets("train")
    per_scene = [conditional_cooccurrence(t[df["scene"].to_numpy() == s]) for s in range(len(SCENES))]
    stack = np.stack(per_scene)
    np.einsum("sii->si", stack)[:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN diagonal entries
        spread = np.nanmax(stack, 0) - np.nanmin(stack, 0)
    assert np.nanmax(spread) > 0.5, "some label pair should co-occur often in one scene and rarely in another"
    means = np.array([np.asarray(Image.open(m.image_root / r).convert("RGB"), dtype=float).mean((0, 1))
                      for r in df["image"].head(200)])
    sc = df["scene"].head(200).to_numpy()
    centroids = np.stack([means[sc == s].mean(0) for s in range(len(SCENES))])
    assert np.min([np.linalg.norm(centroids[i] - centroids[j]) for i in range(5) for j in range(i)]) > 10
