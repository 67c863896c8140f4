"""The toy "ImageNet" weights the kit ships for toy_cnn: their provenance, their held-out accuracy (re-measured
here from the files), a deterministic regeneration, and the errors of a wrong or missing file."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from mlc.data.toy_imagenet import CLASSES, single_objects
from mlc.modeling.backbones import TOY_CNN_WEIGHTS, MissingWeightsError, create_backbone, toy_cnn
from mlc.runs import toy_backbone
from mlc.runs.toy_backbone import FIRST_STEPS, Recipe, evaluate_files, head_path, pretrain, provenance_path

TINY = Recipe(n_train=192, n_test=96, epochs=1, batch_size=64)


def test_the_shipped_weights_have_their_provenance_and_measured_accuracy():
    provenance = json.loads(provenance_path(TOY_CNN_WEIGHTS).read_text())
    for path in (TOY_CNN_WEIGHTS, head_path(TOY_CNN_WEIGHTS)):
        entry = provenance["files"][path.name]
        assert path.stat().st_size == entry["bytes"] < 10 * 2 ** 20
        assert toy_backbone.file_sha256(path) == entry["sha256"], f"{path} is not the file its provenance describes"
    assert provenance["command"].startswith("python -m mlc.runs.toy_backbone") and provenance["commit"]
    assert provenance["classes"] == [f"{c} {s}" for c, s in CLASSES]
    # the accuracy recorded is the accuracy of the files, loaded as a method loads them
    report = evaluate_files(TOY_CNN_WEIGHTS)
    recorded = provenance["held_out"]
    assert report["overall"]["accuracy"] == pytest.approx(recorded["overall"]["accuracy"], abs=0.01)
    # pretrained means something: far above chance, colour almost always right, large objects better than small
    assert report["overall"]["accuracy"] > 5 * report["chance"]
    assert report["overall"]["colour_accuracy"] > 0.8
    assert report["by_size"]["large"]["accuracy"] > report["by_size"]["small"]["accuracy"]


def test_pretrained_toy_backbones_load_the_shipped_file_and_freeze_batchnorm_on_request():
    images = torch.randn(4, 3, 64, 64)
    plain = create_backbone("toy_cnn", pretrained=True).eval()
    scratch = create_backbone("toy_cnn").eval()
    frozen = create_backbone("toy_cnn_frozen_bn", pretrained=True)
    frozen.train()                                          # frozen BatchNorm: train mode changes nothing
    with torch.no_grad():
        tokens, grid = plain(images)
        assert grid == (8, 8) and not torch.allclose(tokens, scratch(images)[0])
        # the same maths in another order (scale and shift folded): float rounding differs between CPUs
        assert torch.allclose(frozen(images)[0], tokens, rtol=1e-3, atol=1e-3)
        before = {k: v.clone() for k, v in frozen.state_dict().items()}
        frozen(images)
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert set(frozen.body.state_dict()) <= set(plain.body.state_dict())      # the same file's keys


def test_toy_q2l_and_its_baseline_train_the_backbone_stages_q2l_trains():
    """Q2L trains layer2-4 of its ResNet (conv1 and layer1 frozen); the toy recipe freezes the toy CNN's stem and
    first residual stage, for its linear baseline too, so that both fine-tune the same layers."""
    from conftest import ROOT as root

    from mlc.config.params import load_params
    from mlc.engine.optim import build_param_groups
    from mlc.runs.build import untrained_method
    from mlc.runs.resolve import method_params
    paper = load_params(root / "params/q2l/coco_r101_448.yaml").methods["q2l"].train.freeze
    assert paper == [r"^backbone\.body\.(conv1|bn1|layer1)\."]
    params = load_params(root / "params/toy.yaml")
    for name in ("q2l", "q2l_linear"):
        mp = method_params(params, name)
        model = untrained_method(mp, 30).model
        build_param_groups(model, mp.train)
        stages = {True: set(), False: set()}
        for key, p in model.named_parameters():
            if key.startswith("backbone.body."):
                stages[p.requires_grad].add(int(key.split(".")[2]))
        assert stages == {False: {0, 3}, True: {4, 5}}, name
        assert all(p.requires_grad for key, p in model.named_parameters() if not key.startswith("backbone."))


def test_pretraining_is_deterministic_and_writes_its_provenance(tmp_path):
    first, second = pretrain(TINY), pretrain(TINY)
    assert all(torch.equal(first.backbone[k], second.backbone[k]) for k in first.backbone)
    other = pretrain(replace(TINY, seed=1))
    assert not torch.equal(first.backbone["0.weight"], other.backbone["0.weight"])
    out = tmp_path / "w" / "toy.pt"
    provenance = toy_backbone.save(first, TINY, out)
    assert json.loads(provenance_path(out).read_text()) == json.loads(json.dumps(provenance))
    assert provenance["recipe"]["n_train"] == TINY.n_train and provenance["cpu_kind"]["threads"] == TINY.threads
    loaded = create_backbone("toy_cnn", weights=str(out)).body.state_dict()
    assert all(torch.equal(loaded[k], first.backbone[k]) for k in first.backbone)
    # --check regenerates from the recorded recipe: the same bits here
    assert toy_backbone.main(["--out", str(out), "--check"]) == 0


def test_single_object_images_are_reproducible_and_cover_every_class_and_size():
    a, b = single_objects(126, 0, "train"), single_objects(126, 0, "train")
    assert np.array_equal(a.images, b.images) and a.images.shape == (126, 64, 64, 3)
    assert set(a.labels.tolist()) == set(range(len(CLASSES)))
    assert not np.array_equal(single_objects(8, 0, "test").images, a.images[:8])
    assert set(a.size_bin().tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="split must be one of"):
        single_objects(2, 0, "val")


def test_a_wrong_or_missing_toy_backbone_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(MissingWeightsError, match="nowhere.pt"):
        create_backbone("toy_cnn", weights=str(missing))
    wider = tmp_path / "wider.pt"
    torch.save(toy_cnn(widths=(16, 32, 64, 256)).state_dict(), wider)
    with pytest.raises(ValueError, match=r"wider.pt: not weights for toy_cnn.*wrong shapes"):
        create_backbone("toy_cnn", weights=str(wider))
    other = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(ValueError, match=r"resnet.pt: not weights for toy_cnn.*missing keys.*unexpected keys"):
        create_backbone("toy_cnn", weights=str(other))
    with pytest.raises(ValueError, match="not a toy ImageNet classifier"):
        torch.save({"weight": torch.zeros(3, 128), "bias": torch.zeros(3)}, tmp_path / "head.pt")
        toy_backbone.load_head(tmp_path / "head.pt")


def test_regenerating_the_shipped_weights_starts_exactly_as_they_were_made():
    """The full regeneration (``python -m mlc.runs.toy_backbone --check``, about 18 minutes on 2 cores) is too
    long for every CI run: its first steps, with the shipped recipe and schedule, must give the backbone whose
    fingerprint the provenance recorded (on the CPU kind that recorded it: ``--record-first-steps`` checked
    there that the first epoch agrees with the one that made the file; on another kind, float sums run in
    another order, and the steps' mean loss must agree within 1 %)."""
    provenance = json.loads(provenance_path(TOY_CNN_WEIGHTS).read_text())
    recipe = Recipe(**provenance["recipe"])
    made = provenance["first_steps"]
    start = pretrain(recipe, steps=made["steps"])
    assert len(provenance["epochs"]) == recipe.epochs
    assert provenance["epochs"][-1]["backbone_sha256"] == toy_backbone.fingerprint(
        toy_backbone.load_torch(TOY_CNN_WEIGHTS))                     # the last epoch's is the shipped file's
    if toy_backbone.cpu_kind(recipe.threads) == made["cpu_kind"]:    # the kind that recorded the steps
        assert start.epochs[0]["backbone_sha256"] == made["backbone_sha256"]
    assert start.epochs[0]["train_loss"] == pytest.approx(made["train_loss"], rel=0.01)


def test_the_first_steps_of_a_run_are_those_of_the_whole_epoch():
    """``pretrain(steps=K)`` generates only the images its K batches draw; they must be the same batches, in the
    same order, as the first K steps of a whole epoch (what makes the CI check above stand for the real run)."""
    recipe = replace(TINY, n_train=FIRST_STEPS * 8 + 3, batch_size=8, epochs=2)
    whole, start = pretrain(recipe, epochs=1), pretrain(recipe, steps=FIRST_STEPS)
    assert whole.first_steps["backbone_sha256"] == start.epochs[0]["backbone_sha256"]
    assert whole.first_steps["train_loss"] == start.epochs[0]["train_loss"]
    assert start.report == {} and whole.report["overall"]["n"] == recipe.n_test
    with pytest.raises(ValueError, match="steps must lie in"):
        pretrain(recipe, steps=FIRST_STEPS + 2)
