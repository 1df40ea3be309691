"""Deterministic demo data synthesised from scikit-image's sample photographs (no download).

Low-light: each clean crop is darkened with a random exposure and gamma, tinted with a slight
colour cast and corrupted with Poisson-Gaussian sensor noise, then quantised to 8 bits.
Haze: the atmospheric scattering model I = J t + A (1 - t), with t = exp(-beta d) from the
motorcycle stereo pair's disparity (near = large disparity) or from a smooth synthetic depth.

Layout under ``root``::

    lowlight/train/{low,high}  lowlight/test/{low,high}  lowlight/unpaired/low
    haze/train/{hazy,clear,trans}  haze/test/{hazy,clear}  haze/unpaired/hazy

Photographs are split by role: the paired train, paired test and unpaired sets never share a
photograph within one task.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np

from data.image_io import write_image

LOWLIGHT_TRAIN = ("astronaut", "coffee", "rocket", "immunohistochemistry")
LOWLIGHT_TEST = ("chelsea", "motorcycle_left")
LOWLIGHT_UNPAIRED = ("hubble_deep_field", "retina", "colorwheel", "camera", "brick", "coins", "clock")
HAZE_TRAIN = ("astronaut", "coffee", "rocket", "chelsea")
HAZE_TEST = ("motorcycle_left",)
HAZE_UNPAIRED = ("immunohistochemistry", "retina", "hubble_deep_field", "camera")

VERSION = 3


def _photo(name: str) -> np.ndarray:
    """A sample photograph as float32 RGB in [0, 1]."""
    import skimage.data as sd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("motorcycle"):
            left, right, _ = sd.stereo_motorcycle()
            img = left if name.endswith("left") else right
        else:
            img = getattr(sd, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    return img.astype(np.float32) / 255.0


def _motorcycle_depth() -> np.ndarray:
    """Relative depth in [0, 1] from the motorcycle disparity map (invalid pixels filled)."""
    import skimage.data as sd

    _, _, disp = sd.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float32)
    valid = np.isfinite(disp) & (disp > 0)
    fill = np.median(disp[valid])
    disp = np.where(valid, disp, fill)
    disp = cv2.GaussianBlur(disp, (0, 0), 3)
    depth = 1.0 / np.maximum(disp, 1e-3)
    depth = (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-6)
    return depth.astype(np.float32)


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _random_crops(img: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    crops = []
    for _ in range(n):
        scale = rng.uniform(0.45, 0.9)
        im = _resize(img, scale)
        if min(im.shape[:2]) < size:
            im = _resize(img, size / min(img.shape[:2]) + 1e-3)
        top = rng.integers(0, im.shape[0] - size + 1)
        left = rng.integers(0, im.shape[1] - size + 1)
        crops.append(im[top:top + size, left:left + size])
    return crops


def darken(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Synthesise a low-light capture of a clean float RGB image."""
    exposure = rng.uniform(0.08, 0.22)
    gamma = rng.uniform(1.1, 1.6)
    cast = 1.0 + rng.uniform(-0.08, 0.08, size=3)
    low = exposure * np.power(img, gamma) * cast
    photons = rng.uniform(300.0, 1200.0)
    low = rng.poisson(np.clip(low, 0, None) * photons) / photons
    low = low + rng.normal(0.0, rng.uniform(0.002, 0.008), size=low.shape)
    return np.clip(low, 0.0, 1.0).astype(np.float32)


def _smooth_depth(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth synthetic depth: a vertical ramp (far at the top) plus low-frequency noise."""
    ramp = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None].repeat(w, axis=1)
    noise = rng.normal(size=(max(2, h // 32), max(2, w // 32))).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    d = ramp + 0.25 * noise
    return ((d - d.min()) / max(float(d.max() - d.min()), 1e-6)).astype(np.float32)


def add_haze(img: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Haze a clean image with the scattering model; return (hazy, transmission, A)."""
    import torch

    from models.physics import haze_image

    beta = rng.uniform(1.2, 2.4)
    a = float(rng.uniform(0.75, 0.95))
    t = np.exp(-beta * (0.25 + 0.75 * depth)).astype(np.float32)  # no haze-free region
    J = torch.from_numpy(img).permute(2, 0, 1)[None]
    T = torch.from_numpy(t)[None, None]
    A = torch.full((1, 3, 1, 1), a)
    hazy = haze_image(J, T, A, t_min=0.0)[0].permute(1, 2, 0).numpy()
    return np.clip(hazy, 0, 1).astype(np.float32), t, a


def make_lowlight(root: Path, seed: int, crop: int = 96, per_photo: int = 10) -> None:
    rng = np.random.default_rng(seed)
    base = root / "lowlight"
    k = 0
    for name in LOWLIGHT_TRAIN:
        for c in _random_crops(_photo(name), per_photo, crop, rng):
            write_image(base / "train" / "high" / f"{k:04d}.png", c)
            write_image(base / "train" / "low" / f"{k:04d}.png", darken(c, rng))
            k += 1
    k = 0
    for name in LOWLIGHT_TEST:
        img = _photo(name)
        img = _resize(img, 160 / min(img.shape[:2]))
        h, w = img.shape[:2]
        for top, left in ((0, 0), (h - 128, w - 160), (h // 2 - 64, w // 2 - 80)):
            c = img[top:top + 128, left:left + 160]
            write_image(base / "test" / "high" / f"{name}_{k:02d}.png", c)
            write_image(base / "test" / "low" / f"{name}_{k:02d}.png", darken(c, rng))
            k += 1
    k = 0
    for name in LOWLIGHT_UNPAIRED:
        for c in _random_crops(_photo(name), 4, crop, rng):
            write_image(base / "unpaired" / "low" / f"{k:04d}.png", darken(c, rng))
            k += 1


def make_haze(root: Path, seed: int, crop: int = 96, per_photo: int = 8) -> None:
    rng = np.random.default_rng(seed + 1)
    base = root / "haze"
    k = 0
    for name in HAZE_TRAIN:
        for c in _random_crops(_photo(name), per_photo, crop, rng):
            hazy, t, a = add_haze(c, _smooth_depth(crop, crop, rng), rng)
            write_image(base / "train" / "clear" / f"{k:04d}.png", c)
            write_image(base / "train" / "hazy" / f"{k:04d}_{a:.5f}.png", hazy)
            write_image(base / "train" / "trans" / f"{k:04d}.png", np.repeat(t[:, :, None], 3, axis=2))
            k += 1
    img = _photo("motorcycle_left")
    depth = _motorcycle_depth()
    scale = 192 / img.shape[1]
    img, depth = _resize(img, scale), _resize(depth, scale)
    h, w = img.shape[:2]
    k = 0
    for top in range(0, h - 96 + 1, max(1, (h - 96) // 2)):
        for left in (0, w - 128):
            c, d = img[top:top + 96, left:left + 128], depth[top:top + 96, left:left + 128]
            hazy, _, _ = add_haze(c, d, rng)
            write_image(base / "test" / "clear" / f"motorcycle_{k:02d}.png", c)
            write_image(base / "test" / "hazy" / f"motorcycle_{k:02d}.png", hazy)
            k += 1
    k = 0
    for name in HAZE_UNPAIRED:
        for c in _random_crops(_photo(name), 6, crop, rng):
            hazy, _, _ = add_haze(c, _smooth_depth(crop, crop, rng), rng)
            write_image(base / "unpaired" / "hazy" / f"{k:04d}.png", hazy)
            k += 1


def make_demo_data(root: str | Path, seed: int = 0, kind: str = "all", force: bool = False) -> Path:
    """Create the demo data under ``root`` (skipped when a complete copy with the same seed exists)."""
    root = Path(root)
    kinds = ("lowlight", "haze") if kind == "all" else (kind,)
    stamp_path = root / "demo_data.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    for k in kinds:
        if not force and stamp.get(k) == {"seed": seed, "version": VERSION}:
            continue
        (make_lowlight if k == "lowlight" else make_haze)(root, seed)
        stamp[k] = {"seed": seed, "version": VERSION}
        root.mkdir(parents=True, exist_ok=True)
        stamp_path.write_text(json.dumps(stamp, indent=2))
    return root
