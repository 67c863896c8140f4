import json

import pytest
import torch
from conftest import ROOT, toy_params_file, train_subprocess

from mlc.config.params import TrainParams, load_params
from mlc.engine.optim import build_scheduler
from mlc.engine.rundir import RunConflictError, prepare_run_dir


def _params_file(tmp_path, out, extra=""):
    return toy_params_file(tmp_path, out, train=f"epochs: 3, batch_size: 16{extra}", name="resume")


def _train(params_file, kill_at=None, threads=2):
    return train_subprocess(params_file, OMP_NUM_THREADS=str(threads),
                            **({} if kill_at is None else {"MLC_KILL_AT_STEP": str(kill_at)}))


@pytest.mark.slow
def test_kill_9_mid_epoch_then_rerun_gives_the_same_result(tmp_path):
    straight = _params_file(tmp_path, "straight")
    assert _train(straight).returncode == 0
    resumed = _params_file(tmp_path, "resumed")
    killed = _train(resumed, kill_at=6)          # 4 steps per epoch: dies in the middle of epoch 2
    assert killed.returncode == -9, killed.stderr[-2000:]
    stage = tmp_path / "resumed" / "resume" / "q2l"
    assert torch.load(stage / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 0
    assert not (stage / "result.json").exists()
    # resumed in a process given another thread count (run_all --only after a full run_all): it resumes with the
    # thread count it started with, which orders the CPU's sums, so its numbers are the uninterrupted run's
    again = _train(resumed, threads=1)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout and "resuming with the 2 CPU thread(s) this run started with" in again.stdout
    a = json.loads((tmp_path / "straight" / "resume" / "q2l" / "result.json").read_text())
    b = json.loads((stage / "result.json").read_text())
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert a["cpu_threads"] == b["cpu_threads"] == 2
    # the share of each epoch spent waiting for the loader (the CPU has no GPU idle time to report)
    assert all(0 <= r["data_wait_fraction"] < 1 and "gpu_idle_fraction" not in r for r in a["history"])

    # A finished run is reused, not retrained, and never overwritten by other params.
    mtime = (stage / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert _train(resumed).returncode == 0
    assert (stage / "checkpoints" / "last.pt").stat().st_mtime_ns == mtime
    other = _params_file(tmp_path, "resumed", extra=", lr: 0.002")
    with pytest.raises(RunConflictError, match=r"methods.q2l.train.lr: 0.001 -> 0.002"):
        prepare_run_dir(load_params(other))
    failed = _train(other)
    assert failed.returncode != 0 and "RunConflictError" in failed.stderr


def test_checkpoint_for_another_class_count_is_a_clear_error(tmp_path):
    from mlc.runs.build import load_trained
    p = load_params(_params_file(tmp_path, "cls"))
    stage = p.run_dir / "q2l" / "checkpoints"
    stage.mkdir(parents=True)
    from mlc.methods.q2l.model import Q2LConfig, Query2Label
    torch.save({"model": Query2Label(Q2LConfig(), 5).state_dict()}, stage / "best.pt")
    (stage.parent / "result.json").write_text('{"test": {"mAP": 0.5}}')      # a finished run
    with pytest.raises(RuntimeError, match=r"best.pt: checkpoint does not fit model 'q2l' with 30 classes"):
        load_trained(p, "q2l")


def test_onecycle_and_cosine_schedules():
    model = torch.nn.Linear(2, 2)
    tp = TrainParams(epochs=10, lr=1e-4, scheduler="onecycle")
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr)
    sched, per_iter = build_scheduler(opt, tp, steps_per_epoch=10)
    assert per_iter and opt.param_groups[0]["lr"] == pytest.approx(1e-4 / 25)
    for _ in range(19):  # PyTorch's OneCycle peaks at step pct_start * total - 1
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)          # peak at 20 % of the steps
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.85)     # momentum cycles down at the peak
    tp = TrainParams(epochs=10, lr=1e-3, min_lr=1e-6, warmup_epochs=2, scheduler="cosine")
    opt = torch.optim.AdamW(model.parameters(), lr=tp.lr)
    sched, _ = build_scheduler(opt, tp, steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0 and lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-6, abs=2e-6)


def test_param_groups_and_freezing():
    from mlc.config.params import ParamGroup
    from mlc.engine.optim import build_param_groups
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    tp = TrainParams(lr=1.0, freeze=[r"^0\.bias$"], param_groups=[ParamGroup(match=r"^1\.", lr_scale=0.1)])
    groups = build_param_groups(model, tp)
    assert not model[0].bias.requires_grad
    assert [len(g["params"]) for g in groups] == [2, 1] and [g["lr"] for g in groups] == [0.1, 1.0]
    assert all(g["weight_decay"] == tp.weight_decay for g in groups)          # every parameter decays by default
    # MKT's official optimizer: no decay on 1-D parameters (biases), within each group and its learning rate
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    tp = TrainParams(lr=1.0, weight_decay=0.05, decay_1d_params=False,
                     param_groups=[ParamGroup(match=r"^1\.", lr_scale=0.1)])
    groups = build_param_groups(model, tp)
    assert [(g["name"], g["lr"], g["weight_decay"], [p.ndim for p in g["params"]]) for g in groups] == [
        (r"^1\.", 0.1, 0.05, [2]), (r"^1\. (no decay)", 0.1, 0.0, [1]),
        ("default", 1.0, 0.05, [2]), ("default (no decay)", 1.0, 0.0, [1])]
    from mlc.config.params import load_params
    mkt = load_params(ROOT / "params" / "mkt" / "nuswide_vitb16.yaml").methods["mkt"].train
    assert mkt.decay_1d_params is False and mkt.weight_decay == 0.05


def test_a_method_can_join_an_existing_run_but_shared_settings_cannot_change(tmp_path):
    import yaml
    base = tmp_path / "a.yaml"
    base.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: grow\noutput_root: {tmp_path}\n")
    full = load_params(base)
    only_q2l = load_params(base)
    only_q2l.methods = {"q2l": full.methods["q2l"]}
    prepare_run_dir(only_q2l)
    prepare_run_dir(full)                                    # salgl and sgre join the run
    stored = yaml.safe_load((tmp_path / "grow" / "params.yaml").read_text())
    assert set(stored["methods"]) == set(full.methods) and len(full.methods) > 1
    prepare_run_dir(only_q2l)                                 # a subset of the stored methods is fine
    changed = load_params(base, overrides={"seed": 5})
    prepare_run_dir(changed)                # nothing trained yet: the stored params are only a record
    (tmp_path / "grow" / "q2l" / "checkpoints").mkdir(parents=True)
    (tmp_path / "grow" / "q2l" / "checkpoints" / "last.pt").write_bytes(b"")       # q2l's training has started
    with pytest.raises(RunConflictError, match="seed: 5 -> 0"):
        prepare_run_dir(full)


def test_device_cuda_fails_at_once_with_the_reason_when_unusable():
    from mlc.engine.loop import describe_cuda, pick_device
    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda" and "sees" in describe_cuda()
    else:
        with pytest.raises(RuntimeError, match=r"device 'cuda' was asked for, but torch cannot use a GPU here: torch "):
            pick_device("cuda")
        assert pick_device("auto").type == "cpu"


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_autocasts_only_bf16_and_only_with_bf16_hardware(monkeypatch, native):
    """``amp: bf16`` on the CPU is bf16 autocast where the CPU has bf16 in hardware and fp32 elsewhere (where bf16
    is emulated); ``fp16`` (the paper configs) and ``auto`` stay fp32 on every CPU."""
    from mlc.engine import precision as engine
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert engine.resolve_amp("bf16", cpu) == (torch.bfloat16 if native else None)
    for amp in ("fp16", "auto", "none"):
        assert engine.resolve_amp(amp, cpu) is None
    autocast = engine.Autocast(cpu, "bf16")
    layer = torch.nn.Linear(8, 8)
    with autocast():
        out = layer(torch.randn(2, 8))
        # attention takes the math path under CPU bf16 (torch's CPU flash attention is slow in bf16)
        flash_on = torch.backends.cuda.flash_sdp_enabled()
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert flash_on is (not native)
    assert torch.backends.cuda.flash_sdp_enabled()          # restored after the step


def test_the_toy_clip_key_names_the_precision_it_trains_in(monkeypatch):
    """A toy CLIP trained in bf16 is another CLIP: its key differs, so a run never reuses an fp32 CLIP for a bf16
    recipe; where the CPU would run ``amp: bf16`` in fp32 anyway, the key (and so the CLIP) is the fp32 one."""
    from mlc.engine import precision as engine
    from mlc.runs import toy_clip as clip
    toy = ROOT / "params" / "toy.yaml"
    fp32, bf16 = (load_params(toy, set_args=[f"clip.amp={amp}"]) for amp in ("none", "bf16"))
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    assert clip.clip_key(bf16) != clip.clip_key(fp32)
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    assert clip.clip_key(bf16) == clip.clip_key(fp32)


def test_a_resumed_run_gives_the_caller_back_its_thread_count(tmp_path):
    """A resumed run computes with the CPU threads it started with; that count leaked into the rest of the
    process (the next run in the same notebook kernel) after fit returned."""
    from test_logs import _train as train_tiny

    from mlc.config.params import LogParams
    before = torch.get_num_threads()
    quiet = LogParams(tensorboard=False)
    try:
        torch.set_num_threads(2)
        train_tiny(tmp_path / "s", "s", progress=False, log=quiet, epochs=1)
        (tmp_path / "s" / "result.json").unlink()        # as if killed in the final test: the rerun resumes
        torch.set_num_threads(1)
        resumed = train_tiny(tmp_path / "s", "s", progress=False, log=quiet, epochs=1)
        assert resumed.cpu_threads == 2                   # computed with the count the run started with
        assert torch.get_num_threads() == 1               # and the caller has its own count back
    finally:
        torch.set_num_threads(before)
