"""What a training stage logs for TensorBoard, read back as TensorBoard reads it (issue 25), and metrics files that
are strict JSON: NaN is written as null and read back as NaN."""
import json
import math
import re

import numpy as np
import pytest
import torch

from mlc.config.params import EvalParams, LogParams, TrainParams
from mlc.core.io import atomic_write_json, metric_value, nulls_to_nan, to_json
from mlc.engine import logs
from mlc.modeling.method import Method


def _strict(text: str):
    """json.loads that rejects NaN / Infinity, as every parser but Python's does."""
    def refuse(word):
        raise ValueError(f"non-standard JSON constant {word}")
    return json.loads(text, parse_constant=refuse)


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))

    def forward(self, x):
        return {"logits": self.net(x)}


def _loader(n_batches: int, seed: int = 0):
    # class 2 is never positive: its AP is NaN (skipped by the mAP), which result.json must hold as null
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(4 * n_batches):
        target = torch.zeros(3)
        target[:2] = (torch.rand(2, generator=g) > 0.5).float()
        items.append({"image": torch.rand(3, 2, 2, generator=g), "target": target, "index": i})
    return torch.utils.data.DataLoader(items, batch_size=4)


def _train(stage_dir, name: str, progress: bool = True, log: LogParams | None = None, epochs: int = 2):
    from mlc.engine.loop import fit
    method = Method(model=_Linear(), loss_fn=lambda out, t: {
        "loss": torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], t)})
    tp = TrainParams(epochs=epochs, batch_size=4, lr=1e-2, ema_decay=None, log_every=1, amp="none", device="cpu",
                     scheduler="constant")
    return fit(method, {"train": _loader(3), "val": _loader(2, seed=1), "test": _loader(2, seed=1)}, tp,
               EvalParams(), stage_dir, seed=3, stage_name=name, progress=progress,
               log_params=log or LogParams(tensorboard=True))


PARAMS_YAML = """# resolved from params/toy.yaml
name: toyrun
description: a run for the test
seed: 3
output_root: outputs
data: {num_workers: 2, toy: {n_labels: 3}, source_options: {}}
eval: {ap_mode: voc, zsl_top_k: [3, 5]}
log: {tensorboard: true}
methods:
  lin: {model_name: lin, train: {lr: 0.01, device: cpu, epochs: 2, ema_decay: null, freeze: []}}
  other: {model_name: other, train: {lr: 0.5}}
"""


def test_tensorboard_reads_back_the_run_named_in_the_terminals_units_with_hparams_and_figures(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata

    from mlc.notebook import figures
    outputs = tmp_path / "outputs"
    (outputs / "toyrun").mkdir(parents=True)
    (outputs / "toyrun" / "params.yaml").write_text(PARAMS_YAML)
    stage_dir = outputs / "toyrun" / "lin"
    result = _train(stage_dir, "lin")
    printed = capsys.readouterr().out
    # the figures a training notebook draws from the finished run, logged beside its scalars
    fig = figures.learning_curves(result.history, "lin")
    logs.log_figure(stage_dir, "figures/learning_curves", fig)
    pred = np.load(stage_dir / "test_scores.npz")
    logs.log_figure(stage_dir, "figures/pr_curves", figures.pr_curves(pred["scores"], pred["targets"], list("abc"),
                                                                      [0, 1]))

    # the run's name in TensorBoard is its path under the logdir: <run>/<method>, nothing after it
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(outputs))
    mux.Reload()
    assert list(mux.Runs()) == ["toyrun/lin"]
    assert not (stage_dir / "tensorboard").exists() and logs.tensorboard_dir(stage_dir) == stage_dir

    ea = EventAccumulator(str(stage_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    scalars = {t: [e.value for e in ea.Scalars(t)] for t in tags["scalars"]}
    # mAP in percent: the numbers the terminal prints and history.jsonl holds (as a fraction)
    test_line = re.search(r"\[lin\] test mAP ([\d.]+) \(best epoch (\d+)", printed)
    assert test_line, printed
    assert f"{scalars['test/mAP'][-1]:.2f}" == test_line.group(1)
    assert scalars["test/mAP"][-1] == pytest.approx(100 * result.test["mAP"], rel=1e-6)
    val_printed = [float(v) for v in re.findall(r"\[lin\] epoch \d/2 loss [\d.]+ val mAP live ([\d.]+)", printed)]
    assert [f"{v:.2f}" for v in scalars["val/mAP_live"]] == [f"{v:.2f}" for v in val_printed]
    assert scalars["val/mAP_live"] == pytest.approx([100 * r["val_mAP_live"] for r in result.history], rel=1e-6)
    assert scalars["test/CF1"][-1] == pytest.approx(100 * result.test["CF1"], rel=1e-6)
    assert scalars["test/loss"][-1] == pytest.approx(result.test["loss"], rel=1e-6)     # losses stay as they are
    # the best epoch counted as the terminal counts it (from 1), history.jsonl from 0
    assert scalars["epoch/best_epoch"][-1] == int(test_line.group(2)) == result.best_epoch + 1

    # the HPARAMS tab: the params that make the result, flat, and the run's scalars as its metrics
    content = ea.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.SESSION_START_INFO_TAG in content and metadata.SESSION_END_INFO_TAG in content
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hp = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
    assert hp["seed"] == 3 and hp["method.train.lr"] == 0.01 and hp["method.train.epochs"] == 2
    assert hp["data.toy.n_labels"] == 3 and hp["eval.ap_mode"] == "voc" and hp["method.model_name"] == "lin"
    assert hp["eval.zsl_top_k"] == "[3, 5]" and hp["method.train.ema_decay"] == "null"
    for speed_or_name in ("name", "description", "output_root", "data.num_workers", "log.tensorboard",
                          "method.train.device"):
        assert speed_or_name not in hp, speed_or_name
    assert not [k for k in hp if "other" in k or k.startswith("methods.")]

    # the figures as images
    assert {"figures/learning_curves", "figures/pr_curves"} <= set(tags["images"])
    image = ea.Images("figures/learning_curves")[-1]
    assert image.width > 100 and image.encoded_image_string[:4] == b"\x89PNG"


def test_result_and_history_are_strict_json_and_read_back_as_returned(tmp_path):
    stage_dir = tmp_path / "run" / "lin"
    first = _train(stage_dir, "lin", progress=False, log=LogParams(tensorboard=False))
    assert math.isnan(first.test["per_class_AP"][2])                   # class 2 has no positive test image
    result = _strict((stage_dir / "result.json").read_text())
    assert result["test"]["per_class_AP"][2] is None and "NaN" not in (stage_dir / "result.json").read_text()
    for line in (stage_dir / "history.jsonl").read_text().splitlines():
        _strict(line)
    # a finished stage is read back from result.json: null is NaN again, the result the same as when it was made
    again = _train(stage_dir, "lin", progress=False, log=LogParams(tensorboard=False))
    assert json.dumps(again.to_dict()) == json.dumps(first.to_dict())          # NaN prints as NaN on both sides
    assert math.isnan(again.test["per_class_AP"][2])


def test_to_json_writes_null_for_nan_and_infinity_and_numpy_numbers_as_python_ones(tmp_path):
    obj = {"mAP": float("nan"), "inf": -math.inf, "np": np.float32(0.5), "n": np.int64(3), "b": np.bool_(True),
           "ap": np.array([0.25, np.nan]), "t": (1, float("inf")), "none": None, "s": "NaN", "ok": 0.1}
    text = to_json(obj)
    assert _strict(text) == {"mAP": None, "inf": None, "np": 0.5, "n": 3, "b": True, "ap": [0.25, None],
                             "t": [1, None], "none": None, "s": "NaN", "ok": 0.1}
    path = atomic_write_json(tmp_path / "m.json", {"per_class_AP": [float("nan"), 0.5]})
    assert _strict(path.read_text()) == {"per_class_AP": [None, 0.5]}
    back = nulls_to_nan(_strict(path.read_text()))
    assert math.isnan(back["per_class_AP"][0]) and back["per_class_AP"][1] == 0.5
    assert math.isnan(metric_value(None)) and metric_value(1) == 1.0


def test_the_report_reads_null_metrics_as_the_nan_they_were(tmp_path):
    """The report's table of a run whose metrics file says null is the table it gave for the NaN literal."""
    import pandas as pd

    from mlc.evaluation.report import finished_runs
    tables = []
    for writer in (lambda p, o: p.write_text(json.dumps(o)), lambda p, o: atomic_write_json(p, o)):
        root = tmp_path / f"out{len(tables)}"
        run = root / "r"
        (run / "q2l").mkdir(parents=True)
        (run / "params.yaml").write_text("# resolved from params/toy.yaml\nname: r\nmethods:\n  q2l: {}\n")
        metrics = {"mAP": float("nan"), "CF1": 0.5, "OF1": 0.25, "per_class_AP": [float("nan")],
                   "weights": {"kind": "released", "checkpoint": None}}
        writer(run / "q2l" / "metrics_test.json", metrics)
        writer(run / "q2l" / "metrics_zsl.json", {"faithful": {"ZSL": {"mAP": float("nan")}, "GZSL": {"mAP": 0.3}}})
        tables.append(finished_runs(root))
    assert "NaN" not in (tmp_path / "out1" / "r" / "q2l" / "metrics_test.json").read_text()
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert math.isnan(tables[1]["mAP"][0]) and math.isnan(tables[1]["ZSL mAP"][0]) and tables[1]["CF1"][0] == 50


def test_hparams_without_a_run_folder_come_from_the_stage_settings_and_a_legacy_folder_is_kept(tmp_path):
    fallback = {"seed": 1, "eval": {"ap_mode": "noninterp"},
                "methods": {"m": {"train": {"lr": 0.1, "log_every": 5, "compile": False, "param_groups": []}}}}
    hp = logs.result_hparams(tmp_path / "nowhere" / "m", "m", fallback)
    assert hp == {"seed": 1, "eval.ap_mode": "noninterp", "method.train.lr": 0.1, "method.train.param_groups": "[]"}
    # a stage an older kit began keeps its events in tensorboard/: one stage stays one TensorBoard run
    legacy = tmp_path / "old" / "m" / "tensorboard"
    legacy.mkdir(parents=True)
    assert logs.tensorboard_dir(legacy.parent) == legacy.parent
    (legacy / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert logs.tensorboard_dir(legacy.parent) == legacy
    assert logs.in_display_units("test/top3_CF1", 0.5) == 50 and logs.in_display_units("val/loss_live", 0.5) == 0.5


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_learning_curves_label_epochs_with_whole_numbers(epochs):
    """A one-epoch run (toy_ci's MKT and QKS) had its epoch axis labelled 0.94, 0.96, ... 1.06."""
    from mlc.notebook import figures
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_loss_live": 1.0, "val_mAP_live": 0.3, "best_epoch": 0}
               for e in range(epochs)]
    fig = figures.learning_curves(history, "run")
    for ax in fig.axes:
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert set(range(1, epochs + 1)) <= {int(t) for t in ticks} or epochs > 5
