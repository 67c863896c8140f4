"""Mechanism measurements: AP per group of positives (by size, and small ones by what decides them)."""
import numpy as np
import pytest

from mlc.data.toyworld import ToyWorldConfig, context_oracles, generate
from mlc.evaluation.mechanisms import CONTEXT_GROUPS, SIZE_GROUPS, grouped_map, positive_groups


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("w") / "w", ToyWorldConfig(n_train=4, n_val=300, n_test=300),
                    progress=False)


def test_groups_partition_the_positives_by_the_size_of_their_largest_instance(world):
    columns = world.object_indices
    targets = world.dense_targets("test", columns)
    groups = positive_groups(world, "test", columns)
    sizes = sum(groups[g].astype(int) for g in SIZE_GROUPS)
    assert np.array_equal(sizes == 1, targets == 1)                 # every positive in exactly one size group
    assert all(groups[g].sum() > 20 for g in SIZE_GROUPS)
    small = groups["small"]
    decided = groups["context-decided"].astype(int) + groups["appearance-decided"]
    assert decided.max() == 1 and not (decided.astype(bool) & ~small).any()
    # the share the scene decides is the oracle's gap, counted per instance in context_oracles
    oracle = context_oracles(world, "test")
    share = groups["context-decided"].sum() / small.sum()
    assert 0.1 < share and share == pytest.approx(oracle["appearance + scene"] - oracle["appearance only"], abs=0.15)


def test_grouped_map_scores_each_groups_positives_against_every_negative(world):
    columns = world.object_indices
    targets = world.dense_targets("test", columns)
    groups = positive_groups(world, "test", columns)
    rng = np.random.default_rng(0)
    # large positives ranked above every negative, small ones below: large 100, small far lower
    scores = rng.random(targets.shape)
    scores[groups["large"]] += 2
    scores[groups["medium"]] += 1
    scores[groups["small"]] -= 2
    out = grouped_map(scores, targets, groups)
    assert out["large"]["mAP"] == pytest.approx(100) and out["small"]["mAP"] < 30
    assert out["large"]["positives"] == groups["large"].sum() and out["all"]["positives"] == (targets == 1).sum()
    assert set(out) == {"all", *SIZE_GROUPS, *CONTEXT_GROUPS}
    # a group without positives is NaN, not an error
    empty = {"none": np.zeros_like(groups["small"])}
    assert np.isnan(grouped_map(scores, targets, empty)["none"]["mAP"])


def test_a_manifest_without_sizes_is_named(world, monkeypatch):
    df = world.split("test").drop(columns=["box_sizes"])
    monkeypatch.setattr(world, "split", lambda split: df)
    with pytest.raises(ValueError, match="has no 'box_sizes'"):
        positive_groups(world, "test", world.object_indices)
