import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# no test reaches the internet by accident: the kit is offline unless a test (tests/test_weights.py, against its
# own server on 127.0.0.1) says otherwise
os.environ.setdefault("MLC_OFFLINE", "1")

# tests/gpu needs a GPU: collected only where one is promised (benchmarks/gpu_check.sh), so that it fails
# there without one instead of skipping itself anywhere
collect_ignore = [] if os.environ.get("MLC_GPU_TESTS") == "1" else ["gpu"]


def shared_dir() -> Path | None:
    """../shared beside the checkout (or $MLC_SHARED): the oracle records of the official code."""
    for cand in (os.environ.get("MLC_SHARED"), ROOT.parent / "shared", ROOT / "shared"):
        if cand and (Path(cand) / "oracles" / "regen.py").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def oracles():
    """The oracle folder; in CI its absence is a failure, not a skip."""
    d = shared_dir()
    if d is None:
        if os.environ.get("CI"):
            pytest.fail("../shared/oracles not found: the oracle tests cannot run")
        pytest.skip("../shared/oracles not found (set MLC_SHARED); oracle tests need the official records")
    sys.path.insert(0, str(d / "oracles"))
    return d / "oracles"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from mlc.data.toyworld import ToyWorldConfig, generate
    return generate(tmp_path_factory.mktemp("toy") / "world", ToyWorldConfig(n_train=60, n_val=20, n_test=30),
                    progress=False)


def paper_methods(params) -> list[str]:
    """The runs of a params file that stand for a method (no baseline, no second stage that starts from another
    run): one per registered method, whatever methods are registered -- what tests iterate instead of a list."""
    return [m for m, mp in params.methods.items() if mp.baseline_for is None
            and not str(getattr(mp.model, "image_checkpoint", None) or "").startswith("run:")]


def toy_params_file(tmp_path, out="out", train="epochs: 2, batch_size: 16", extra="", name="rel") -> Path:
    """A params file over toy_ci with a tiny world (64 / 16 / 24 images) and Q2L's ``train`` settings."""
    p = tmp_path / f"p_{out}_{abs(hash(train + extra)) % 10**8}.yaml"
    p.write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: {name}\noutput_root: {tmp_path / out}\n"
                 f"data:\n  root: {tmp_path / 'world'}\n  toy: {{n_train: 64, n_val: 16, n_test: 24}}\n"
                 f"methods:\n  q2l:\n    train: {{{train}}}\n{extra}")
    return p


def train_subprocess(params_file, method="q2l", **env_extra):
    """``python -m mlc.train PARAMS --method M`` as a user runs it (``env_extra``: e.g. MLC_KILL_AT_STEP)."""
    import subprocess
    env = {**os.environ, "OMP_NUM_THREADS": "2", **env_extra}
    return subprocess.run([sys.executable, "-m", "mlc.train", str(params_file), "--method", method],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


class RunsCode:
    """Unpickled with full pickle, this creates a marker file: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class SpeedSwitches:
    """How an oracle test runs its forward: on ``MLC_TEST_DEVICE`` (cpu by default; the GPU check sets cuda),
    in fp32, with the engine's speed switches of this parametrisation (channels_last, torch.compile)."""

    def __init__(self, name: str):
        import torch
        self.name = name
        self.device = torch.device(os.environ.get("MLC_TEST_DEVICE", "cpu"))

    def forward(self, model, *inputs, call=None):
        """``call(model, *inputs)`` (default: the model's forward) under no_grad, outputs back on the CPU."""
        import torch
        torch.backends.cudnn.allow_tf32 = False           # fp32 means fp32 on a GPU too (the oracles are fp32)
        torch.backends.cuda.matmul.allow_tf32 = False
        model = model.to(self.device).eval()
        inputs = [x.to(self.device) if isinstance(x, torch.Tensor) else x for x in inputs]
        if self.name in ("channels_last", "compiled"):
            model = model.to(memory_format=torch.channels_last)
            inputs = [x.contiguous(memory_format=torch.channels_last) if isinstance(x, torch.Tensor) and x.dim() == 4
                      else x for x in inputs]
        net = torch.compile(model) if self.name == "compiled" else model
        with torch.no_grad():
            out = (call or (lambda m, *a: m(*a)))(net, *inputs)
        return _to_cpu(out)


def _to_cpu(x):
    import torch
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x


@pytest.fixture(params=["plain", "channels_last"])
def speed(request):
    """Every oracle test runs with the speed switches off and on (fp32; see SpeedSwitches)."""
    return SpeedSwitches(request.param)


# ./run_tests.sh runs a test file per process (pytest-xdist, --dist loadfile), handing files out in collection
# order. The longest files first (measured serially on 2 cores: the notebook run about 290 s, torchrun 180 s,
# released files and faults 60-70 s each) keep every process busy to the end instead of leaving one alone with the
# notebooks; the order of the tests inside a file is kept.
LONGEST_FILES_FIRST = ["test_notebooks.py", "test_distributed.py", "test_released.py", "test_reliability.py",
                       "test_weights.py", "test_git_filters.py", "test_launch.py", "test_q2l.py",
                       "test_new_method.py", "test_engine.py", "test_released_files.py", "test_toy_clip.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))       # stable: the rest keep their order
