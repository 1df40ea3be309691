"""Image grids: column titles stay inside their own column."""
from __future__ import annotations

import numpy as np

from common_utils.visual import image_grid


def _ink_columns(header: np.ndarray) -> np.ndarray:
    """x positions where the header has any non-white pixel."""
    return np.nonzero((header < 250).any(axis=(0, 2)))[0]


def test_a_long_column_title_wraps_instead_of_running_into_the_next_column():
    tile = 120
    rows = [[np.full((30, 60, 3), 0.5, np.float32)] * 3]
    short = image_grid(rows, ["in", "", ""], tile_width=tile)
    long = image_grid(rows, ["in", "RtxICE after stage 2 (sup, DAWN) extraordinarilylongword", ""], tile_width=tile)
    head = long.shape[0] - short.shape[0] + 26  # the header grows by the extra lines
    assert long.shape[0] > short.shape[0]
    ink = _ink_columns(long[:head])
    assert ink.max() < 2 * (tile + 4), "the second title reaches into the third column"
    assert ink[ink >= tile + 4].min() >= tile + 4 + 6  # and starts inside its own column
    np.testing.assert_array_equal(long[head:], short[26:])  # the pictures themselves are unchanged
