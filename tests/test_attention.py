"""Pointing game on hand-made maps."""
import numpy as np
import pytest

from mlc.evaluation.attention import peak_inside, pointing_game


def test_peak_inside_and_chance_share():
    m = np.zeros((4, 4))
    m[0, 3] = 1                                           # peak at cell centre (x 0.875, y 0.125)
    assert peak_inside(m, [(0.5, 0.0, 1.0, 0.5)]) == (True, 0.25)
    assert peak_inside(m, [(0.0, 0.5, 0.5, 1.0)])[0] is False


def test_pointing_game_counts_pairs_per_label_and_skips_unscored_labels():
    maps = np.zeros((2, 3, 4, 4))
    maps[0, 0, 0, 0] = 1                                  # label 0 of image 0 peaks top-left: hit
    maps[0, 2, 3, 3] = 1                                  # label 2 of image 0 peaks bottom-right: miss
    maps[1, 1, 3, 3] = 1                                  # label 1 of image 1: hit (second of its two boxes)
    box_labels = [[0, 2], [1, 1, 5]]
    boxes = [[(0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)], [(0, 0, 0.25, 0.25), (0.75, 0.75, 1, 1), (0, 0, 1, 1)]]
    r = pointing_game(maps, box_labels, boxes, columns=[0, 1, 2])    # label 5 has no column: not counted
    assert r["pairs"] == 3 and r["hits"] == 2 and r["score"] == pytest.approx(2 / 3)
    assert r["chance"] == pytest.approx((0.25 + 0.25 + 2 / 16) / 3)
