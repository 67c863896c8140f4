import json

import numpy as np
import pandas as pd
import pytest

from mlc.data.dataset import ImageError, MultiLabelDataset
from mlc.data.manifest import Label, Manifest, ManifestError, write_manifest


def _labels(n):
    return [Label(i, f"id{i}", f"label {i}", seen=i < n - 1) for i in range(n)]


def test_sparse_roundtrip_with_unknown_policy(tmp_path):
    df = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "pos": [[0], [2]], "neg": [[1], []], "ignore": [[], [0]]})
    m = write_manifest(tmp_path, name="x", labels=_labels(3), splits={"train": df}, absent="unknown")
    t = Manifest(tmp_path).dense_targets("train")
    np.testing.assert_array_equal(t, [[1, 0, -1], [-1, -1, 1]])
    assert list(m.unseen_indices) == [2] and list(m.seen_indices) == [0, 1]
    write_manifest(tmp_path / "closed", name="x", labels=_labels(3), splits={"train": df}, absent="negative")
    np.testing.assert_array_equal(Manifest(tmp_path / "closed").dense_targets("train", [0, 2]), [[1, 0], [-1, 1]])


def test_label_kinds_round_trip_and_a_manifest_without_them_reads_as_objects(tmp_path):
    """Tags (``kind: "tag"``, the toy world's broad seen vocabulary) are no objects: closed-set methods train on
    ``label_subset: objects``; a manifest written before kinds existed has objects only."""
    labels = _labels(3) + [Label(3, "red", "red", kind="tag"), Label(4, "beach", "beach", kind="tag")]
    df = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "pos": [[0, 3, 4], [2, 4]]})
    m = write_manifest(tmp_path / "m", name="x", labels=labels, splits={"train": df})
    assert Manifest(tmp_path / "m").labels == labels
    assert list(m.label_subset("objects")) == [0, 1, 2] and list(m.label_subset("tags")) == [3, 4]
    assert list(m.label_subset("seen")) == [0, 1, 3, 4] and list(m.label_subset("unseen")) == [2]
    assert list(m.labels_per_image("train", m.label_subset("objects"))) == [1, 1]
    with pytest.raises(ValueError, match=r"label subset must be one of \['all', 'seen', 'unseen', 'objects', 'tags'\], "
                                         r"got 'tag'"):
        m.label_subset("tag")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    for entry in meta["labels"]:
        del entry["kind"]                              # as every manifest converted before label kinds
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    old = Manifest(tmp_path / "m")
    assert {lab.kind for lab in old.labels} == {"object"} and list(old.label_subset("objects")) == list(range(5))
    assert not len(old.label_subset("tags"))
    meta["labels"][3]["kind"] = "hashtag"
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ManifestError, match=r"meta.json: labels\[3\] \('red'\) has kind 'hashtag', not one of "
                                            r"\['object', 'tag'\]"):
        Manifest(tmp_path / "m")
    with pytest.raises(ValueError, match=r"label 'red' has kind 'hashtag'"):
        write_manifest(tmp_path / "n", name="x", labels=[Label(0, "red", "red", kind="hashtag")], splits={"train": df})


def test_bad_label_index_names_file_and_row(tmp_path):
    df = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "pos": [[0], [7]]})
    write_manifest(tmp_path, name="x", labels=_labels(3), splits={"train": df})
    with pytest.raises(ManifestError, match=r"train\.parquet: row 1 .*'b\.jpg'.*index 7"):
        Manifest(tmp_path).split("train")


def test_missing_or_corrupt_files(tmp_path):
    with pytest.raises(ManifestError, match="meta.json"):
        Manifest(tmp_path)
    df = pd.DataFrame({"image": ["a.jpg"], "pos": [[0]]})
    write_manifest(tmp_path, name="x", labels=_labels(2), splits={"train": df})
    (tmp_path / "train.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="train.parquet"):
        Manifest(tmp_path).split("train")
    with pytest.raises(ManifestError, match="split 'val' not found"):
        Manifest(tmp_path).split("val")
    (tmp_path / "meta.json").write_text("{broken")
    with pytest.raises(ManifestError, match=r"meta.json: not valid JSON \(line 1"):
        Manifest(tmp_path)


def test_dataset_reports_missing_and_corrupt_images(tiny_world, tmp_path):
    ds = MultiLabelDataset(tiny_world, "train")
    item = ds[0]
    assert item["target"].shape == (tiny_world.num_labels,) and set(item["target"].tolist()) <= {0.0, 1.0}
    meta = json.loads((tiny_world.root / "meta.json").read_text())
    meta["image_root"] = str(tmp_path)
    other = tmp_path / "m"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps(meta))
    (other / "train.parquet").write_bytes((tiny_world.root / "train.parquet").read_bytes())
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "train" / "00001.png").write_bytes(b"garbage")
    ds = MultiLabelDataset(Manifest(other), "train")
    with pytest.raises(ImageError, match=r"00000\.png: image not found \(listed in .*train\.parquet, row 0\)"):
        ds[0]
    with pytest.raises(ImageError, match=r"00001\.png: cannot decode image"):
        ds[1]


@pytest.mark.parametrize("pos, what", [
    ([[0.0], [5.7]], r"row 1 \(image 'b\.jpg'\) column 'pos' has label 5\.7, not a whole label index"),
    ([[0.0], [float("nan")]], r"row 1 .* has label nan, not a whole label index"),
    ([["0"], ["two"]], r"row 0 .* has label '0', not a whole label index"),
    ([[0], None], r"row 1 \(image 'b\.jpg'\) column 'pos' holds None, not a list of label indices"),
])
def test_label_lists_that_are_not_whole_indices_are_named_not_truncated(tmp_path, pos, what):
    """A fractional index used to be truncated silently (5.7 -> label 5); NaN, strings and None were raw errors."""
    write_manifest(tmp_path, name="x", labels=_labels(8), splits={"train": pd.DataFrame(
        {"image": ["a.jpg", "b.jpg"], "pos": [[0], [1]]})})
    pd.DataFrame({"image": ["a.jpg", "b.jpg"], "pos": pos}).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(ManifestError, match=r"train\.parquet: " + what):
        Manifest(tmp_path).split("train")


def test_an_image_listed_twice_in_a_split_is_refused(tmp_path):
    """Ten test images listed twice used to count twice in every metric (mAP 25.6 against 23.6)."""
    df = pd.DataFrame({"image": ["a.jpg", "b.jpg", "a.jpg"], "pos": [[0], [1], [0]]})
    write_manifest(tmp_path, name="x", labels=_labels(3), splits={"test": df.iloc[:2]})
    df.to_parquet(tmp_path / "test.parquet")
    with pytest.raises(ManifestError, match=r"test\.parquet: 1 images are listed more than once \(first: 'a\.jpg', "
                                            r"rows \[0, 2\]\)"):
        Manifest(tmp_path).split("test")


def test_evaluation_images_that_are_training_images_are_warned_about(tmp_path):
    """A test split made of training images trained and scored without a word; now a warning names it."""
    from mlc.config.params import TrainParams
    from mlc.runs.data import MethodData, check_method_data
    train = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "pos": [[0], [1]]})
    test = pd.DataFrame({"image": ["b.jpg", "c.jpg"], "pos": [[1], [0]]})
    write_manifest(tmp_path, name="x", labels=_labels(3), splits={"train": train, "test": test})
    m = Manifest(tmp_path)
    datasets = {s: MultiLabelDataset(m, s, None, [0, 1, 2]) for s in ("train", "test")}
    datasets["val"] = datasets["test"]
    with pytest.warns(UserWarning, match=r"test\.parquet: 1 of the 2 test images are also training images "
                                         r"\(first: 'b\.jpg'\)"):
        check_method_data(MethodData(m, [0, 1, 2], datasets), TrainParams(batch_size=1), check_files=False)


def test_a_16_bit_greyscale_png_loads_as_its_picture_not_white(tmp_path):
    """Pillow's own RGB conversion clips 16-bit values: such a PNG trained as an all-white image."""
    from PIL import Image
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    write_manifest(tmp_path / "m", name="x", labels=_labels(2), image_root="..",
                   splits={"train": pd.DataFrame({"image": ["deep.png"], "pos": [[0]]})})
    rgb = np.asarray(MultiLabelDataset(Manifest(tmp_path / "m"), "train").load_image(0))
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert rgb.min() == 0 and rgb.max() == 255 and 120 < rgb.mean() < 135        # the ramp, not white
    np.testing.assert_array_equal(rgb[..., 0], np.round(ramp / 65535 * 255).astype(np.uint8))


def test_a_dark_16_bit_png_stays_dark():
    """The 16-bit scale was chosen by the image's own maximum: a dark 16-bit PNG (all values <= 255 of 65535)
    was stretched as if it were 8-bit, and came out bright."""
    import io

    from PIL import Image

    from mlc.data.dataset import to_rgb
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint16)).save(buf, format="PNG")
    img = Image.open(io.BytesIO(buf.getvalue()))
    assert img.mode == "I;16" and np.asarray(to_rgb(img)).max() == 1       # 200 / 65535 * 255, not 200
    as_older_pillow_opens_it = img.convert("I")            # older Pillow versions open 16-bit PNGs in mode I
    as_older_pillow_opens_it.format = "PNG"
    assert np.asarray(to_rgb(as_older_pillow_opens_it)).max() == 1


def test_an_image_too_large_to_decode_safely_is_named(tmp_path):
    """A header-only 20000 x 20000 PNG raised Pillow's raw DecompressionBombError."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    write_manifest(tmp_path / "m", name="x", labels=_labels(2), image_root="..",
                   splits={"train": pd.DataFrame({"image": ["huge.png"], "pos": [[0]]})})
    with pytest.raises(ImageError, match=r"huge\.png: refused, too many pixels to decode safely \(listed in "
                                         r".*train\.parquet, row 0\)"):
        MultiLabelDataset(Manifest(tmp_path / "m"), "train").load_image(0)


@pytest.mark.parametrize("labels, error", [
    ([{"index": 0, "id": "a", "name": "a", "colour": "red"}], r"labels\[0\] has unknown keys \['colour'\]"),
    ([{"index": 0, "name": "a"}], r"labels\[0\] lacks \['id'\]"),
    ([], r"the manifest has no labels"),
])
def test_meta_json_labels_with_wrong_keys_or_none_are_named(tmp_path, labels, error):
    """Extra or missing label keys were a raw TypeError; zero labels trained and was blamed on the weights."""
    write_manifest(tmp_path, name="x", labels=_labels(2), splits={"train": pd.DataFrame(
        {"image": ["a.jpg"], "pos": [[0]]})})
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "labels": labels}))
    with pytest.raises(ManifestError, match=r"meta.json: " + error):
        Manifest(tmp_path)


def test_writing_a_manifest_with_an_image_listed_twice_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"split 'test': 1 images are listed more than once \(first: 'a.jpg'\)"):
        write_manifest(tmp_path / "m", name="x", labels=_labels(2),
                       splits={"train": pd.DataFrame({"image": ["b.jpg"], "pos": [[0]]}),
                               "test": pd.DataFrame({"image": ["a.jpg", "a.jpg"], "pos": [[0], [1]]})})
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
