"""Demo data: deterministic from the seed, the documented layout, photographs split by role."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from data.demo import LOWLIGHT_TEST, LOWLIGHT_TRAIN, LOWLIGHT_UNPAIRED, make_demo_data
from data.image_io import read_image


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_demo_data_is_deterministic_and_laid_out(tmp_path):
    a = make_demo_data(tmp_path / "a", seed=3, kind="all")
    b = make_demo_data(tmp_path / "b", seed=3, kind="all")
    da, db = _digest(a), _digest(b)
    assert da == db and len(da) > 100
    for sub in ("lowlight/train/low", "lowlight/train/high", "lowlight/test/low", "lowlight/test/high",
                "lowlight/unpaired/low", "haze/train/hazy", "haze/train/clear", "haze/train/trans",
                "haze/test/hazy", "haze/test/clear", "haze/unpaired/hazy"):
        assert any((a / sub).iterdir()), sub
    assert sorted(p.name for p in (a / "lowlight/train/low").iterdir()) == \
        sorted(p.name for p in (a / "lowlight/train/high").iterdir())
    c = make_demo_data(tmp_path / "c", seed=4, kind="lowlight")
    assert _digest(c) != {k: v for k, v in da.items() if k.startswith("lowlight")}


def test_low_light_inputs_are_darker_noisier_versions_of_the_targets(tmp_path):
    root = make_demo_data(tmp_path, seed=0, kind="lowlight") / "lowlight" / "test"
    for low_path in sorted((root / "low").iterdir()):
        low, high = read_image(low_path), read_image(root / "high" / low_path.name)
        assert low.shape == high.shape
        assert low.mean() < 0.5 * high.mean()
    assert not set(LOWLIGHT_TRAIN) & set(LOWLIGHT_TEST)
    assert not set(LOWLIGHT_UNPAIRED) & (set(LOWLIGHT_TRAIN) | set(LOWLIGHT_TEST))
    assert np.isfinite(low).all()
