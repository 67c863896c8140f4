"""The toy CLIP the kit ships (lib/mlc/modeling/toy_weights/toy_clip.pt): its key is params/toy.yaml's, it rebuilds
to the state it was trained to, a run installs it instead of training, and its training starts as recorded."""
import json

import pytest
import torch
from conftest import ROOT, toy_params_file

from mlc.config.params import load_params
from mlc.core.safe_load import load_torch
from mlc.modeling.backbones import TOY_CNN_WEIGHTS
from mlc.runs import toy_clip
from mlc.runs.toy_backbone import cpu_kind, file_sha256, fingerprint

TOY = ROOT / "params" / "toy.yaml"


def test_the_shipped_toy_clip_is_the_one_toy_params_train_and_the_weights_stay_under_10_mb():
    """A change of the toy world, the CLIP config or its recipe changes the key: the shipped file would then be
    silently unused (every run training its own), so the key must be the current params' one."""
    provenance = toy_clip.shipped_provenance()
    assert provenance["key"] == toy_clip.clip_key(load_params(TOY), precision=provenance["precision"]), \
        "the shipped toy CLIP was made for other params: run python -m mlc.cli.toy_clip"
    for name, entry in provenance["files"].items():
        assert file_sha256(toy_clip.SHIPPED_CLIP.with_name(name)) == entry["sha256"]
    assert provenance["command"].startswith(toy_clip.COMMAND) and provenance["commit"]
    assert len(provenance["history"]) == load_params(TOY).clip.epochs
    shipped = sum(p.stat().st_size for p in TOY_CNN_WEIGHTS.parent.iterdir())
    assert shipped < 10e6, f"the toy weights are {shipped / 1e6:.1f} MB"


def test_a_run_with_the_shipped_key_installs_the_shipped_state_bit_for_bit(tmp_path):
    params = load_params(TOY, output_root=str(tmp_path))
    if toy_clip.clip_key(params) != toy_clip.shipped_provenance()["key"]:
        # a CPU without bf16 hardware trains the toy CLIP in fp32: another recipe, which must not get the bf16 file
        assert toy_clip.install_shipped(params, progress=False) is None
        assert not toy_clip.clip_checkpoint(params).exists()
        return
    record = toy_clip.train_toy_clip(params, manifest=None, progress=False)     # no data needed: nothing trains
    path = toy_clip.clip_checkpoint(params)
    assert record["shipped"] and record["path"] == str(path) and path.is_file()
    assert fingerprint(load_torch(path)) == toy_clip.shipped_provenance()["state_sha256"]
    assert json.loads(path.with_suffix(".json").read_text())["key"] == toy_clip.clip_key(params)
    other = load_params(TOY, output_root=str(tmp_path / "other"), set_args=["clip.lr=1e-3"])
    assert toy_clip.install_shipped(other) is None                  # another recipe: another key, nothing installed


def test_shipping_prunes_only_untouched_rows_and_a_changed_initialisation_falls_back_to_training(tmp_path):
    from mlc.runs.data import prepare_data
    params = load_params(toy_params_file(tmp_path), set_args=["clip.amp=none"])
    manifest = prepare_data(params, progress=False)
    record = toy_clip.train_toy_clip(params, manifest, progress=False, use_shipped=False)
    out = tmp_path / "ship" / "toy_clip.pt"
    provenance = toy_clip.ship(params, record, out)
    trained = load_torch(record["path"])
    pruned = load_torch(out)
    assert "token_embedding.weight" not in pruned
    assert 0 < len(pruned["token_embedding.rows"]) < 1000 < len(trained["token_embedding.weight"])
    assert out.stat().st_size < 0.4 * sum(t.numel() * t.element_size() for t in trained.values())

    toy_clip.clip_checkpoint(params).unlink()                       # the run's own file gone: install the shipped
    installed = toy_clip.train_toy_clip(params, manifest, progress=False, shipped_path=out)
    assert installed["shipped"] == str(out)
    assert fingerprint(load_torch(installed["path"])) == provenance["state_sha256"] == fingerprint(trained)

    toy_clip.clip_checkpoint(params).unlink()
    wrong = dict(provenance, initial_sha256="0", state_sha256="0")  # as a torch that initialises otherwise
    out.with_suffix(".json").write_text(json.dumps(wrong))
    assert toy_clip.install_shipped(params, out, progress=False) is None


@pytest.mark.slow
def test_training_the_shipped_toy_clip_again_starts_as_recorded(tmp_path):
    """The full regeneration (``python -m mlc.runs.toy_clip --check``) takes minutes: its first steps must give
    the recorded state on the CPU kind that recorded them, and the recorded mean loss within 1 % elsewhere (bf16
    sums run in another order there)."""
    from mlc.runs.data import prepare_data
    made = toy_clip.shipped_provenance()["first_steps"]
    params = load_params(TOY, output_root=str(tmp_path))
    start = toy_clip.train_toy_clip(params, prepare_data(params, progress=False), progress=False,
                                    steps=made["steps"])["first_steps"]
    if cpu_kind(torch.get_num_threads()) == made["cpu_kind"] and start["precision"] == made["precision"]:
        assert start["state_sha256"] == made["state_sha256"]
    assert start["train_loss"] == pytest.approx(made["train_loss"], rel=0.01)
