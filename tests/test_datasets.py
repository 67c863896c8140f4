"""Dataset converters on tiny fixtures written in each dataset's real on-disk format."""
import json
import pickle
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import RunsCode
from PIL import Image

from mlc.data.datasets import convert_dataset, list_converters
from mlc.data.datasets.common import DatasetFormatError, group_lists


def _jpg(path, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)


def test_every_converter_is_registered():
    assert set(list_converters()) >= {"coco", "voc", "nuswide81", "nuswide_zsl", "vg500", "openimages"}
    with pytest.raises(KeyError, match="did you mean 'coco'"):
        convert_dataset("coc", ".", ".")


def test_group_lists_sorts_and_deduplicates():
    out = group_lists(np.array([2, 0, 2, 2]), np.array([5, 1, 3, 5]), 4)
    assert [o.tolist() for o in out] == [[1], [], [3, 5], []]


# ---------------------------------------------------------------- COCO
def _coco(root):
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "toothbrush"}]
    for split, images, anns in (
            ("train", [(10, 1), (11, 0), (9, 2)], [(10, 3), (10, 3), (10, 1), (9, 90)]),
            ("val", [(20, 1), (21, 0)], [(20, 90)])):
        data = {"images": [{"id": i, "file_name": f"COCO_{split}2014_{i:012d}.jpg", "width": 12, "height": 10}
                           for i, _ in images],
                "annotations": [{"id": k, "image_id": i, "category_id": c} for k, (i, c) in enumerate(anns)],
                "categories": cats}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))


def test_coco_keeps_or_drops_images_without_annotations(tmp_path):
    _coco(tmp_path / "coco")
    m = convert_dataset("coco", tmp_path / "coco", tmp_path / "m1", keep_empty=True)
    assert m.label_names == ["person", "car", "toothbrush"] and [l.id for l in m.labels] == ["1", "3", "90"]
    train = m.split("train")
    assert train["coco_id"].tolist() == [9, 10, 11]                     # sorted by image id
    assert [list(p) for p in train["pos"]] == [[2], [0, 1], []]          # duplicates collapse
    assert train["image"][0] == "train2014/COCO_train2014_000000000009.jpg"
    assert len(m.split("test")) == 2
    m2 = convert_dataset("coco", tmp_path / "coco", tmp_path / "m2", keep_empty=False)
    assert len(m2.split("train")) == 2 and len(m2.split("test")) == 1


def test_coco_errors_name_the_file(tmp_path):
    _coco(tmp_path / "coco")
    bad = tmp_path / "coco" / "annotations" / "instances_val2014.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DatasetFormatError, match=r"instances_val2014.json:2: not valid JSON"):
        convert_dataset("coco", tmp_path / "coco", tmp_path / "m")
    bad.unlink()
    with pytest.raises(DatasetFormatError, match=r"instances_val2014.json: file not found"):
        convert_dataset("coco", tmp_path / "coco", tmp_path / "m")


# ---------------------------------------------------------------- VOC
def _voc(root, year=2007):
    def xml(objs):
        body = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult></object>" for n, d in objs)
        return f"<annotation><filename>x.jpg</filename>{body}</annotation>"
    images = {"000001": [("Dog", False), ("person", True)], "000002": [("diningtable", False)],
              "000003": [("dog", True), ("dog", False), ("person", True)],       # test: person difficult-only
              "000004": [("person", True)]}                                      # test: only difficult objects
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for i, objs in images.items():
        (root / "Annotations" / f"{i}.xml").write_text(xml(objs))
        _jpg(root / "JPEGImages" / f"{i}.jpg")
    main = root / "ImageSets" / "Main"
    if year == 2007:
        (main / "trainval.txt").write_text("000001\n000002\n")
        (main / "test.txt").write_text("000003\n000004\n")
    else:                                   # as VOC 2012 ships: trainval = train + val
        (main / "train.txt").write_text("000001\n000002\n")
        (main / "val.txt").write_text("000003\n000004\n")
        (main / "trainval.txt").write_text("000001\n000002\n000003\n000004\n")


@pytest.mark.parametrize("policy,train_person", [("salgl", "pos"), ("sgre", "neg"), ("ignore", "ignore")])
def test_voc_difficult_policies_and_test_ignore_mask(tmp_path, policy, train_person):
    _voc(tmp_path / "VOC2007")
    m = convert_dataset("voc", tmp_path / "VOC2007", tmp_path / policy, difficult=policy)
    assert [l.id for l in m.labels] == ["diningtable", "dog", "person"]
    assert m.label_names == ["dining table", "dog", "person"]
    t = m.dense_targets("train")
    assert t[0].tolist() == {"pos": [0, 1, 1], "neg": [0, 1, 0], "ignore": [0, 1, -1]}[train_person]
    test = m.dense_targets("test")
    assert test.tolist() == [[0, 1, -1], [0, 0, -1]]       # difficult-only cells are unknown at test


def test_voc_errors(tmp_path):
    _voc(tmp_path / "VOC2007")
    (tmp_path / "VOC2007" / "Annotations" / "000002.xml").write_text("<annotation>\n<object><name>dog</name>\n")
    with pytest.raises(DatasetFormatError, match=r"000002.xml:3: not well-formed XML"):
        convert_dataset("voc", tmp_path / "VOC2007", tmp_path / "m")
    _voc(tmp_path / "v2")
    (tmp_path / "v2" / "Annotations" / "000003.xml").write_text(
        "<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(DatasetFormatError, match=r"000003.xml: unknown class 'unicorn'"):
        convert_dataset("voc", tmp_path / "v2", tmp_path / "m")
    _voc(tmp_path / "v3")
    (tmp_path / "v3" / "JPEGImages" / "000004.jpg").unlink()
    with pytest.raises(DatasetFormatError, match="1 images of VOC 2007 are missing, e.g. JPEGImages/000004.jpg"):
        convert_dataset("voc", tmp_path / "v3", tmp_path / "m")


def test_voc2012_uses_val_as_test(tmp_path):
    _voc(tmp_path / "VOC2012", year=2012)
    m = convert_dataset("voc", tmp_path / "VOC2012", tmp_path / "m", year=2012, difficult="sgre")
    assert m.name == "voc2012" and len(m.split("test")) == 2
    # train is VOC 2012's train list, not trainval (val, the test split, is part of trainval)
    train, test = set(m.split("train")["image"]), set(m.split("test")["image"])
    assert len(train) == 2 and not train & test
    faithful = convert_dataset("voc", tmp_path / "VOC2012", tmp_path / "f", year=2012, difficult="sgre",
                               train_set="trainval")      # SGRE's voc2012.py: the overlap, on purpose
    assert len(faithful.split("train")) == 4
    assert set(faithful.split("test")["image"]) <= set(faithful.split("train")["image"])


# ---------------------------------------------------------------- NUS-WIDE
NUS_IMAGES = ["actor\\0001_1.jpg", "beach_sand\\0002_2.jpg", "sky\\0003_3.jpg", "sky\\0004_4.jpg",
              "zoo\\0005_5.jpg"]
TRAIN, TEST = [0, 1, 2], [3, 4]
CONCEPTS = ["sky", "sand", "animal"]
TAGS = ["sky", "blue", "sea", "sand", "cloud"]                 # "sky" and "sand" overlap with the concepts


def _nus_common(root, missing=()):
    (root / "ImageList").mkdir(parents=True)
    (root / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    (root / "ImageList" / "Imagelist.txt").write_text(
        "".join(f"C:\\ImageData\\Flickr\\{p}\n" for p in NUS_IMAGES))
    (root / "ImageList" / "TrainImagelist.txt").write_text("".join(NUS_IMAGES[i] + "\n" for i in TRAIN))
    (root / "ImageList" / "TestImagelist.txt").write_text("".join(NUS_IMAGES[i] + "\n" for i in TEST))
    for i, p in enumerate(NUS_IMAGES):
        if i not in missing:
            _jpg(root / "Flickr" / p.replace("\\", "/"))


GT81 = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1], [0, 0, 1]])   # image 2 has no concept


def test_nuswide81_drops_empty_images_and_reports_missing_files(tmp_path):
    root = tmp_path / "NUS-WIDE"
    _nus_common(root, missing={4})
    (root / "Groundtruth" / "AllLabels").mkdir(parents=True)
    for c, concept in enumerate(CONCEPTS):
        (root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt").write_text(
            "".join(f"{v}\n" for v in GT81[:, c]))
    m = convert_dataset("nuswide81", root, tmp_path / "m")
    assert m.split("train")["image"].tolist() == ["Flickr/actor/0001_1.jpg", "Flickr/beach_sand/0002_2.jpg"]
    assert m.split("test")["image"].tolist() == ["Flickr/sky/0004_4.jpg"]     # zoo image missing on disk
    assert (tmp_path / "m" / "missing_images.txt").read_text() == "Flickr/zoo/0005_5.jpg\n"
    assert m.meta["missing_images"] == 1
    with pytest.raises(DatasetFormatError, match="missing"):
        convert_dataset("nuswide81", root, tmp_path / "m2", strict=True)
    (root / "Groundtruth" / "AllLabels" / "Labels_sand.txt").write_text("0\n1\n0\n2\n0\n")
    with pytest.raises(DatasetFormatError, match=r"Labels_sand.txt:4: expected 0 or 1, got '2'"):
        convert_dataset("nuswide81", root, tmp_path / "m3")


# Seen labels: blue, sea, cloud (TagList1k minus the concepts); unseen: sky, sand, animal.
TAGS1K = np.array([[1, 1, 0, 0, 0],     # train 0: sky(unseen, dropped), blue
                   [0, 0, 0, 1, 0],     # train 1: only sand (unseen) -> no seen tag -> dropped
                   [0, 0, 1, 0, 1],     # train 2: sea, cloud
                   [0, 0, 0, 0, 0],     # test 3: no seen tag, unseen sky + animal
                   [0, 1, 0, 0, 0]])    # test 4: blue, unseen animal


def _nus_qks(root):
    _nus_common(root)
    (root / "NUS_WID_Tags").mkdir()
    (root / "NUS_WID_Tags" / "TagList1k.txt").write_text("\n".join(TAGS) + "\n")
    for name, rows in (("Train", TRAIN), ("Test", TEST)):
        (root / "NUS_WID_Tags" / f"{name}_Tags1k.dat").write_text(
            "".join(" ".join(map(str, TAGS1K[r])) + " \n" for r in rows))
    (root / "Groundtruth" / "TrainTestLabels").mkdir(parents=True)
    for c, concept in enumerate(CONCEPTS):
        (root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_Test.txt").write_text(
            "".join(f"{GT81[r, c]}\n" for r in TEST))


def _nus_mkt(root):
    import h5py
    _nus_common(root)
    seen_cols = [1, 2, 4]
    (root / "Concepts925.txt").write_text("\n".join(TAGS[c] for c in seen_cols) + "\n")
    names = [p.replace("\\", "_") for p in NUS_IMAGES]
    (root / "features").mkdir()
    for split, rows, file in (("train", TRAIN, "img_names.pkl"), ("test", TEST, "test_img_names.pkl")):
        with open(root / file, "wb") as f:
            pickle.dump({"img_names": [names[r] for r in rows]}, f)
        with h5py.File(root / "features" / f"nus_wide_{split}.h5", "w") as h:
            for r in rows:
                seen = TAGS1K[r, seen_cols]
                lab = seen if split == "train" else np.concatenate([seen, GT81[r]])
                h[f"{names[r]}-labels"] = (2 * lab - 1).astype(np.int8)
                h[f"{names[r]}-labels_81"] = (2 * GT81[r] - 1).astype(np.int8)


def test_nuswide_zsl_both_layouts_give_the_same_manifest(tmp_path):
    _nus_qks(tmp_path / "qks")
    _nus_mkt(tmp_path / "mkt")
    a = convert_dataset("nuswide_zsl", tmp_path / "qks", tmp_path / "ma", layout="qks")
    b = convert_dataset("nuswide_zsl", tmp_path / "mkt", tmp_path / "mb", layout="mkt")
    assert [(l.name, l.seen) for l in a.labels] == [("blue", True), ("sea", True), ("cloud", True),
                                                  ("sky", False), ("sand", False), ("animal", False)]
    assert a.labels == b.labels
    for split in ("train", "test"):
        da, db = a.split(split), b.split(split)
        assert da["image"].tolist() == db["image"].tolist()
        np.testing.assert_array_equal(a.dense_targets(split), b.dense_targets(split))
    assert a.split("train")["image"].tolist() == ["Flickr/actor/0001_1.jpg", "Flickr/sky/0003_3.jpg"]
    assert a.dense_targets("test").tolist() == [[0, 0, 0, 1, 0, 1], [1, 0, 0, 0, 0, 1]]
    assert b.split("test")["image"][0] == "Flickr/sky/0004_4.jpg"


def test_nuswide_mkt_names_with_underscores_in_the_folder(tmp_path):
    from mlc.data.datasets.nuswide import mkt_image_path
    assert mkt_image_path("beach_sand_0002_2.jpg") == "Flickr/beach_sand/0002_2.jpg"


def test_nuswide_zsl_malformed_tag_matrix(tmp_path):
    _nus_qks(tmp_path / "qks")
    (tmp_path / "qks" / "NUS_WID_Tags" / "Train_Tags1k.dat").write_text("1 0 0 0 0\n0 0 3 0 0\n1 1 1 1 1\n")
    with pytest.raises(DatasetFormatError, match=r"Train_Tags1k.dat:2: values other than 0 and 1"):
        convert_dataset("nuswide_zsl", tmp_path / "qks", tmp_path / "m")


# ---------------------------------------------------------------- Visual Genome 500
def _vg(root):
    part = root / "ssgrl_partition"
    part.mkdir(parents=True)
    (part / "vg_category_500_labels_index.json").write_text(json.dumps({"tree": 1, "man": 0, "window": 2}))
    (part / "train_list_500.txt").write_text("1.jpg\n2.jpg\n3.jpg\n")
    (part / "test_list_500.txt").write_text("4.jpg\n")
    objects = [{"image_id": 1, "objects": [{"names": ["Tree "]}, {"names": ["man", "person"]}]},
               {"image_id": 2, "objects": [{"names": ["window"]}]},
               {"image_id": 3, "objects": [{"names": ["cat"]}]},
               {"image_id": 4, "objects": [{"names": ["man"]}, {"names": ["tree"]}]}]
    (root / "objects.json").write_text(json.dumps(objects))
    for i, d in ((1, "VG_100K"), (2, "VG_100K_2"), (3, "VG_100K"), (4, "VG_100K")):
        _jpg(root / d / f"{i}.jpg")


def test_vg500_mapping(tmp_path):
    _vg(tmp_path / "vg")
    m = convert_dataset("vg500", tmp_path / "vg", tmp_path / "m")
    assert m.label_names == ["man", "tree", "window"]
    train = m.split("train")
    assert train["image"].tolist() == ["VG_100K/1.jpg", "VG_100K_2/2.jpg"]
    assert [list(p) for p in train["pos"]] == [[0, 1], [2]]
    assert m.meta["images_without_labels_dropped"] == {"train": 1, "test": 0}
    (tmp_path / "vg" / "ssgrl_partition" / "test_list_500.txt").write_text("4.jpg\n99.jpg\n")
    with pytest.raises(DatasetFormatError, match=r"test_list_500.txt:2: image 99.jpg is not in objects.json"):
        convert_dataset("vg500", tmp_path / "vg", tmp_path / "m2")


# ---------------------------------------------------------------- Open Images
OI_NAMES = {"/m/a": "Apple", "/m/b": "Bird", "/m/c": "Cat", "/m/d": "Apple", "/m/u1": "Unicycle",
            "/m/u2": "Ukulele", "/m/u3": "Umbrella", "/m/x": "Other"}


def _openimages(root, images=True):
    meta = root / "2018_04"
    (meta / "train").mkdir(parents=True)
    (meta / "test").mkdir()
    (meta / "class-descriptions.csv").write_text("".join(f'{k},"{v}"\n' for k, v in OI_NAMES.items()))
    (meta / "classes-trainable.txt").write_text("/m/c\n/m/a\n/m/b\n/m/d\n")
    with open(meta / "unseen_labels.pkl", "wb") as f:
        pickle.dump(["/m/u1", "/m/u2", "/m/u3"], f)
    (meta / "top_400_unseen.csv").write_text("2\n0\n")
    header = "ImageID,Source,LabelName,Confidence\n"
    (meta / "train" / "train-annotations-human-imagelabels.csv").write_text(header + "".join([
        "aa01,verification,/m/a,1\n", "aa01,verification,/m/b,0\n", "aa01,verification,/m/u1,1\n",
        "bb02,verification,/m/d,1\n", "bb02,verification,/m/d,0\n",          # conflict -> dropped
        "cc03,verification,/m/x,1\n", "cc03,verification,/m/c,0\n",          # no seen positive -> dropped
        "dd04,crowdsource-verification,/m/c,1\n"]))
    (meta / "test" / "test-annotations-human-imagelabels.csv").write_text(header + "".join([
        "ee05,verification,/m/u3,1\n", "ee05,verification,/m/a,0\n", "ff06,verification,/m/u1,0\n"]))
    if images:
        for i in ("aa01", "bb02", "cc03", "dd04"):
            _jpg(root / "train" / i[:2] / f"{i}.jpg")
        _jpg(root / "test" / "ee05.jpg")


def test_openimages_labels_by_mid_and_split_semantics(tmp_path):
    _openimages(tmp_path / "oi")
    m = convert_dataset("openimages", tmp_path / "oi", tmp_path / "m")
    # seen sorted by name (ties by MID: two "Apple"s stay distinct), then unseen sorted by name
    assert [(l.id, l.name, l.seen) for l in m.labels] == [
        ("/m/a", "Apple", True), ("/m/d", "Apple", True), ("/m/b", "Bird", True), ("/m/c", "Cat", True),
        ("/m/u3", "Umbrella", False), ("/m/u1", "Unicycle", False)]
    assert m.meta["absent"] == "unknown"
    assert m.split("train")["image"].tolist() == ["train/aa/aa01.jpg", "train/dd/dd04.jpg"]
    seen = m.label_subset("seen")
    assert m.dense_targets("train", seen).tolist() == [[1, -1, 0, -1], [-1, -1, -1, 1]]   # u1: not a train label
    assert m.dense_targets("test").tolist() == [[0, -1, -1, -1, 1, -1]]             # ff06: no positive
    assert m.meta["conflicting_images_dropped"] == {"train": 1, "test": 0}


def test_openimages_errors(tmp_path):
    _openimages(tmp_path / "oi")
    meta = tmp_path / "oi" / "2018_04"
    (meta / "classes-trainable.txt").write_text("/m/a\n/m/zzz\n")
    with pytest.raises(DatasetFormatError, match=r"classes-trainable.txt:2: label '/m/zzz' is not in class-desc"):
        convert_dataset("openimages", tmp_path / "oi", tmp_path / "m")
    _openimages(tmp_path / "oi2")
    meta = tmp_path / "oi2" / "2018_04"
    (meta / "top_400_unseen.csv").write_text("1\n7\n")
    with pytest.raises(DatasetFormatError, match=r"top_400_unseen.csv:2: expected an index"):
        convert_dataset("openimages", tmp_path / "oi2", tmp_path / "m")
    _openimages(tmp_path / "oi3")
    csv = tmp_path / "oi3" / "2018_04" / "test" / "test-annotations-human-imagelabels.csv"
    csv.write_text("ImageID,Source,LabelName,Confidence\nee05,verification,/m/u3,1\nff06,verification,/m/a,yes\n")
    with pytest.raises(DatasetFormatError, match=r"test-annotations-human-imagelabels.csv:3: Confidence"):
        convert_dataset("openimages", tmp_path / "oi3", tmp_path / "m")
    csv.write_text("ImageID,LabelName\nee05,/m/u3\n")
    with pytest.raises(DatasetFormatError, match=r"expected columns ImageID, Source, LabelName, Confidence"):
        convert_dataset("openimages", tmp_path / "oi3", tmp_path / "m")


def test_openimages_without_images_and_missing_images(tmp_path):
    _openimages(tmp_path / "oi", images=False)
    m = convert_dataset("openimages", tmp_path / "oi", tmp_path / "m", check_images=False)
    assert m.split("train")["image"].tolist() == ["train/aa01.jpg", "train/dd04.jpg"]
    m = convert_dataset("openimages", tmp_path / "oi", tmp_path / "m2")
    assert len(m.split("train")) == 0 and m.meta["missing_images"] == 3


# ---------------------------------------------------------------- downloader
class _Handler(SimpleHTTPRequestHandler):
    flaky_hits: dict = {}

    def do_GET(self):                                            # noqa: N802
        if self.path.startswith("/flaky/"):
            n = self.flaky_hits.get(self.path, 0)
            self.flaky_hits[self.path] = n + 1
            if n == 0:                                           # first request fails with a server error
                self.send_error(503)
                return
            self.path = self.path[len("/flaky"):]
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_downloader_retries_resizes_resumes_and_reports(tmp_path):
    from mlc.data.datasets.download import download_images
    web = tmp_path / "web"
    web.mkdir()
    Image.new("RGB", (600, 400), (0, 90, 200)).save(web / "big.jpg")
    Image.new("RGB", (100, 80), (0, 90, 200)).save(web / "small.png")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(web)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        csv = tmp_path / "images.csv"
        csv.write_text("ImageID,Subset,OriginalURL\n"
                       f"00aa,train,{base}/big.jpg\n01bb,train,{base}/flaky/small.png\n"
                       f"02cc,train,{base}/missing.jpg\n")
        out = tmp_path / "train"
        r = download_images(csv, out, workers=3, backoff=0.01, progress=False)
        assert r.downloaded == 2 and r.skipped == 0 and [f[0] for f in r.failed] == ["02cc"]
        with Image.open(out / "00" / "00aa.jpg") as im:
            assert im.size == (384, 256)                        # shorter side 256, aspect kept
        with Image.open(out / "01" / "01bb.jpg") as im:
            assert im.size == (100, 80) and im.format == "JPEG"   # small images are not enlarged
        assert "02cc" in (out / "failures.csv").read_text()
        again = download_images(csv, out, workers=2, backoff=0.01, progress=False)
        assert again.skipped == 2 and again.downloaded == 0 and len(again.failed) == 1
    finally:
        server.shutdown()


@pytest.mark.slow
def test_data_preparation_notebook_converts_a_real_format(tmp_path):
    """Notebook 01 with dataset="voc": converts the fixture and draws every figure."""
    import papermill
    from conftest import ROOT
    _voc(tmp_path / "VOC2007")
    params = tmp_path / "p.yaml"
    params.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: vocnb\noutput_root: {tmp_path / 'out'}\n"
                      f"data: {{dataset: manifest, manifest: {tmp_path / 'voc_manifest'}}}\n")
    papermill.execute_notebook(str(ROOT / "notebooks/01_data_preparation.ipynb"), str(tmp_path / "run.ipynb"),
                               parameters={"params_file": str(params), "dataset": "voc",
                                           "raw_root": str(tmp_path / "VOC2007"),
                                           "converter_options": {"difficult": "sgre"}},
                               cwd=str(ROOT), progress_bar=False, kernel_name="python3")
    meta = json.loads((tmp_path / "voc_manifest" / "meta.json").read_text())
    assert meta["conversion"] == {"source": "voc", "raw_root": str(tmp_path / "VOC2007"),
                                  "options": {"difficult": "sgre"}}
    for fig in ("data_samples", "data_label_frequencies", "data_labels_per_image", "data_cooccurrence"):
        assert (tmp_path / "out" / "vocnb" / "figures" / f"{fig}.pdf").is_file()


# ---------------------------------------------------------------- malformed files that used to pass or crash raw
def _coco_edit(root, split, edit):
    path = root / "annotations" / f"instances_{split}2014.json"
    data = json.loads(path.read_text())
    data = edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: {**d, "images": [{k: v for k, v in d["images"][0].items() if k != "file_name"}] + d["images"][1:]},
     r"instances_train2014.json: images\[0\] needs 'file_name' \(str\), got missing"),
    (lambda d: {**d, "annotations": None}, r"instances_train2014.json: 'annotations' must be a list, got NoneType"),
    (lambda d: {**d, "categories": [{"id": 1}] + d["categories"][1:]},
     r"instances_train2014.json: categories\[0\] needs 'name' \(str\), got missing"),
    (lambda d: [d], r"instances_train2014.json: the top level must be an object"),
    (lambda d: {**d, "images": d["images"] + [d["images"][0]]},
     r"instances_train2014.json: images\[3\] repeats image id 10"),
])
def test_coco_malformed_records_are_named(tmp_path, edit, message):
    _coco(tmp_path / "coco")
    _coco_edit(tmp_path / "coco", "train", edit)
    with pytest.raises(DatasetFormatError, match=message):
        convert_dataset("coco", tmp_path / "coco", tmp_path / "m")
    assert not (tmp_path / "m" / "meta.json").exists()


def test_coco_non_utf8_file_is_named(tmp_path):
    _coco(tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "instances_val2014.json"
    path.write_bytes(path.read_bytes().replace(b'"images"', b'\n"images\xff"'))
    with pytest.raises(DatasetFormatError, match=r"instances_val2014.json:2: not UTF-8 text"):
        convert_dataset("coco", tmp_path / "coco", tmp_path / "m")


def test_vg500_names_must_be_a_list_of_strings(tmp_path):
    _vg(tmp_path / "vg")
    objects_path = tmp_path / "vg" / "objects.json"
    objects = json.loads(objects_path.read_text())
    objects[1]["objects"][0]["names"] = "window"            # a string: used to match per character, silently
    objects_path.write_text(json.dumps(objects))
    with pytest.raises(DatasetFormatError, match=r"objects.json: entry 1 \(image 2\) object 0: 'names' must be a list"):
        convert_dataset("vg500", tmp_path / "vg", tmp_path / "m")
    objects_path.write_text(json.dumps({"images": objects}))
    with pytest.raises(DatasetFormatError, match=r"objects.json: the top level must be a list"):
        convert_dataset("vg500", tmp_path / "vg", tmp_path / "m")


def test_openimages_header_only_csv_is_named(tmp_path):
    _openimages(tmp_path / "oi")
    csv = tmp_path / "oi" / "2018_04" / "train" / "train-annotations-human-imagelabels.csv"
    csv.write_text("ImageID,Source,LabelName,Confidence\n")
    with pytest.raises(DatasetFormatError, match=r"train-annotations-human-imagelabels.csv: no label rows"):
        convert_dataset("openimages", tmp_path / "oi", tmp_path / "m")


def test_crafted_pickles_in_dataset_layouts_run_nothing(tmp_path, monkeypatch):
    from mlc.core.safe_load import UnsafeFileError
    marker = tmp_path / "ran"
    _openimages(tmp_path / "oi")
    with open(tmp_path / "oi" / "2018_04" / "unseen_labels.pkl", "wb") as f:
        pickle.dump(["/m/u1", RunsCode(marker)], f)
    with pytest.raises(UnsafeFileError, match=r"unseen_labels.pkl: the pickle holds objects outside the safe list"):
        convert_dataset("openimages", tmp_path / "oi", tmp_path / "m")
    _nus_mkt(tmp_path / "nus")
    with open(tmp_path / "nus" / "img_names.pkl", "wb") as f:
        pickle.dump({"img_names": [RunsCode(marker)]}, f)
    with pytest.raises(UnsafeFileError, match=r"img_names.pkl"):
        convert_dataset("nuswide_zsl", tmp_path / "nus", tmp_path / "m2", layout="mkt")
    assert not marker.exists()
    # the opt-in names the file: with it, full unpickling runs (and so would the code)
    monkeypatch.setenv("MLC_TRUSTED_FILES", str(tmp_path / "oi" / "2018_04" / "unseen_labels.pkl"))
    from mlc.core.safe_load import load_pickle
    load_pickle(tmp_path / "oi" / "2018_04" / "unseen_labels.pkl")
    assert marker.exists()


def test_a_misspelt_converter_option_is_named_before_any_file_is_read(tmp_path):
    """``data.source_options: {keep_emty: true}`` passed loading and failed inside the COCO converter."""
    with pytest.raises(ValueError, match=r"data.source_options: the coco converter has no option 'keep_emty' \(did "
                                         r"you mean 'keep_empty'\?\); its options: keep_empty, year"):
        convert_dataset("coco", tmp_path / "no such folder", tmp_path / "out", keep_emty=True)
