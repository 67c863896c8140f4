import hashlib
import warnings

import numpy as np
from PIL import Image

from mlc.data.toyworld import (
    SCENES,
    TAGS,
    ToyWorldConfig,
    build_structure,
    context_oracles,
    generate,
    missing_tags,
    world_statistics,
)
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


def test_processes_draw_the_same_world_as_one(tmp_path, monkeypatch):
    # a large world is drawn by one process per core, in chunks; the bytes must not depend on who drew what
    from mlc.data import toyworld
    monkeypatch.setattr(toyworld, "_CHUNK", 5)
    cfg = ToyWorldConfig(n_train=13, n_val=6, n_test=4)
    toyworld._write_world(tmp_path / "one", cfg, progress=False, workers=0)
    toyworld._write_world(tmp_path / "two", cfg, progress=False, workers=2)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert _digest(tmp_path / "one") == _digest(generate(tmp_path / "g", cfg, progress=False).root)
    assert toyworld._world_workers(toyworld.PARALLEL_FROM_IMAGES - 1) == 0


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
    objects = m.label_subset("objects")
    assert list(objects) == list(range(30))          # the object labels first, with the indices they had before tags
    t = m.dense_targets("train", objects)
    card = (t == 1).sum(1)
    assert card.min() >= 1 and card.max() <= 5
    for _, row in df.iterrows():
        row["pos"] = [i for i in row["pos"] if i in objects]
        boxes = np.array(row["boxes"].tolist())
        # one box, size and visible share per labelled instance; a label may have several instances
        assert len(boxes) == len(row["box_labels"]) == len(row["box_sizes"]) == len(row["box_visible"])
        assert set(row["box_labels"]) == set(row["pos"])
        assert (boxes >= 0).all() and (boxes <= 1).all() and (boxes[:, 2] > boxes[:, 0]).all()
        assert (np.asarray(row["box_sizes"]) < 0.46).all() and (np.asarray(row["box_sizes"]) >= 0.06).all()
        assert ((np.asarray(row["box_visible"]) >= 0) & (np.asarray(row["box_visible"]) <= 1)).all()
        # the caption names what it names, and only labels of the image
        assert set(row["caption_labels"]) <= set(row["pos"])
        for lab in row["caption_labels"]:
            assert m.label_names[lab] in row["caption"]
        assert any(p in row["caption"] for p in ("beach", "forest", "city", "snow", "night"))
    assert set(m.split_names) == {"train", "val", "test"}
    assert len(m.split("val")) == 20 and len(m.split("test")) == 30


def test_each_condition_holds_with_its_statistic(tmp_path):
    """The conditions of docs/toy-world.md, pinned on a 1,500-image world: COCO's size shares and clutter,
    occlusion, captions that name large objects far more often than small ones, a long tail, and context
    that names small objects their colour alone does not."""
    m = generate(tmp_path / "w", ToyWorldConfig(n_train=1500, n_val=600, n_test=2), progress=False)
    stats = world_statistics(m, "train").set_index("statistic")["toy world"]
    assert abs(stats["% of labelled objects small"] - 41) < 4
    assert abs(stats["% of labelled objects medium"] - 34) < 4
    assert abs(stats["% of labelled objects large"] - 24) < 4
    assert 2.6 <= stats["labels an image"] <= 3.1
    assert 5.5 <= stats["objects an image (distractors included)"] <= 7.5
    assert stats["distractors an image (in no label set)"] > 1
    assert stats["% of labelled objects over a quarter hidden or cut"] > 3
    small, medium, large = (stats[f"% of labels named, largest instance {b}"] for b in ("small", "medium", "large"))
    assert small < 30 < medium < 80 < large
    assert 35 <= stats["% of images with the most frequent label"] <= 55
    assert stats["% of images with the rarest label"] < 5
    oracles = context_oracles(m, "val")
    assert oracles["small instances"] > 300
    assert oracles["appearance + scene"] - oracles["appearance only"] > 0.15
    # a broad seen vocabulary (NUS-WIDE: 925 seen tags against 81 unseen): noisy tags, every unseen word among them
    assert stats["seen tags"] == len(TAGS) and stats["unseen labels"] == 8
    assert stats["seen : unseen labels"] >= 8
    assert stats["% of the unseen labels' words that are seen tags"] == 100
    small, medium, large = (stats[f"% of tags missing, largest instance {b}"] for b in ("small", "medium", "large"))
    assert small > 70 > medium > 20 > 10 > large      # as the captions: an instance tagged with 0.15 / 0.55 / 0.95
    assert stats["% of images without their scene tag"] == 0


def test_a_colour_s_shapes_are_typical_of_different_scenes():
    s = build_structure(ToyWorldConfig())
    for colour in {c for c, _ in s.labels}:
        scenes = [s.typical_scene[i] for i, (c, _) in enumerate(s.labels) if c == colour]
        assert len(set(scenes)) == len(scenes)


def test_cooccurrence_depends_on_scene(tmp_path):
    m = generate(tmp_path / "w", ToyWorldConfig(n_train=1500, n_val=2, n_test=2), progress=False)
    objects = m.label_subset("objects")           # the objects: a scene tag differs by scene trivially
    df, t = m.split("train"), m.dense_targets("train", objects)
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


def test_bad_world_settings_name_the_key(tmp_path):
    import pytest
    from conftest import ROOT

    from mlc.config.params import ParamsError, load_params
    for setting, message in [("data.toy.size_weights=[0.5,0.5]", r"data\.toy: size_bins, size_weights and "
                                                                  r"mention_probability must have one entry per size"),
                             ("data.toy.extra_instance_probability=1", r"extra_instance_probability: must be in"),
                             ("data.toy.size_bins=[[0.2,0.1]]", r"size_bins: must be a non-empty list"),
                             ("data.toy.labels_per_image_weights=[0,0]", r"labels_per_image_weights: must be")]:
        with pytest.raises(ParamsError, match=message):
            load_params(ROOT / "params" / "toy_ci.yaml", set_args=[setting], output_root=str(tmp_path))


def test_tags_are_seen_name_what_the_image_shows_and_never_an_unseen_label(tiny_world):
    m = tiny_world
    tags, unseen = m.label_subset("tags"), m.label_subset("unseen")
    assert [m.label_names[i] for i in tags] == TAGS and all(m.labels[i].kind == "tag" for i in tags)
    assert set(tags) <= set(m.label_subset("seen")) and {m.labels[i].kind for i in unseen} == {"object"}
    names = {m.label_names[i] for i in tags}
    assert not names & {m.label_names[i] for i in unseen}
    assert {w for i in unseen for w in m.label_names[i].split()} <= names        # every unseen word is a seen tag
    for split in m.split_names:
        df = m.split(split)
        for _, row in df.iterrows():
            shown = {m.label_names[i] for i in row["box_labels"]} | set(row["distractor_names"])
            words = {w for n in shown for w in n.split()} | set(row["distractor_names"]) | {SCENES[row["scene"]]}
            tagged = {m.label_names[i] for i in row["pos"] if i in tags}
            assert SCENES[row["scene"]] in tagged and tagged <= words, (split, row["image"])
    # an unseen object's words are tagged too: the words of unseen labels occur in other combinations
    rows = missing_tags(m, "train")
    assert (~rows["missing"]).any() and set(rows["group"]) == {"word", "scene", "object"}


def test_the_tags_change_nothing_else_of_the_world(tmp_path):
    """The tags come from a random stream of their own: a world with them has the images, captions and boxes of
    the world without them, and its object labels' positives."""
    cfg, cfg_without = ToyWorldConfig(n_train=10, n_val=2, n_test=2), ToyWorldConfig(n_train=10, n_val=2, n_test=2,
                                                                                     tags=False)
    assert cfg.key() != cfg_without.key()        # the tags are in the key: a world made before them is not reused
    with_tags, without = generate(tmp_path / "a", cfg, progress=False), generate(tmp_path / "b", cfg_without,
                                                                                 progress=False)
    assert without.num_labels == 30 and with_tags.num_labels == 30 + len(TAGS)
    images = sorted(p.relative_to(without.root) for p in (without.root / "images").rglob("*.png"))
    assert images and all((with_tags.root / p).read_bytes() == (without.root / p).read_bytes() for p in images)
    for split in without.split_names:
        a, b = with_tags.split(split), without.split(split)
        assert [[i for i in p if i < 30] for p in a["pos"]] == [list(p) for p in b["pos"]]
        for column in b.columns.drop("pos"):
            assert a[column].astype(str).tolist() == b[column].astype(str).tolist(), column


def test_closed_set_methods_learn_the_object_labels_and_open_vocabulary_ones_the_tags_too(tmp_path):
    """toy_ci's closed-set methods train and are scored on the 30 object labels (``label_subset: objects``), the
    open-vocabulary methods on the seen objects and every tag; the ZSL columns are the unseen objects alone."""
    from conftest import ROOT

    from mlc.config.params import load_params
    from mlc.evaluation.open_vocab import label_order
    from mlc.runs.data import method_data, prepare_data
    params = load_params(ROOT / "params" / "toy_ci.yaml", output_root=str(tmp_path),
                         set_args=[f"data.root={tmp_path / 'world'}", "data.toy.n_train=16", "data.toy.n_val=4",
                                   "data.toy.n_test=4", "data.image_cache=none"])
    manifest = prepare_data(params, progress=False)
    for name, mp in params.methods.items():
        data = method_data(params, name, manifest)
        if mp.label_subset == "seen":
            assert len(data.labels) == 22 + len(TAGS) and set(manifest.label_subset("tags")) <= set(data.labels)
        else:
            assert mp.label_subset == "objects" and data.labels == list(range(30)), name
            assert data.datasets["train"][0]["target"].shape == (30,)
    order, n_seen = label_order(manifest)
    assert n_seen == 22 + len(TAGS) and {manifest.labels[i].kind for i in order[n_seen:]} == {"object"}
