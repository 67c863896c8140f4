import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
