"""The one image writer (data/image_io.write_image): exact PNG round trip, atomic writes, one error
behaviour, and the comparison page and the figure helper writing the very bytes it writes."""
from __future__ import annotations

import signal
import sys

import cv2
import numpy as np
import pytest

from common_utils.evaluation.html_page import write_picture
from common_utils.visual import save_jpeg
from data.image_io import read_image_raw, write_image
from foundation.errors import UserError


def _pixels(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fast_png", [False, True])
def test_png_round_trip_is_exact(tmp_path, fast_png):
    px = _pixels()
    write_image(tmp_path / "u8.png", px, fast_png=fast_png)
    assert np.array_equal(read_image_raw(tmp_path / "u8.png"), px)  # channel order kept, no rounding
    write_image(tmp_path / "f.png", px.astype(np.float32) / 255.0)
    assert np.array_equal(read_image_raw(tmp_path / "f.png"), px)  # float in [0, 1] maps back to the same bytes
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside them


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE (a full disk in miniature) needs a POSIX system")
def test_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    """A write cut off half-way (file-size limit: a full disk in miniature) keeps the old content."""
    import resource

    path = tmp_path / "out.png"
    write_image(path, np.zeros((8, 8, 3), np.uint8))
    old = path.read_bytes()
    big = _pixels(256, 256, seed=1)  # noise: about 200 kB of PNG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of a kill
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
        with pytest.raises(UserError, match="out.png"):
            write_image(path, big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # the temporary file is gone too


def test_errors_name_the_file(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(UserError, match="blocker"):
        write_image(tmp_path / "blocker" / "x.png", _pixels())
    with pytest.raises(UserError, match="bad.png"):
        write_image(tmp_path / "bad.png", np.zeros((4, 4, 7), np.uint8))  # 7 channels: no PNG holds that
    with pytest.raises(UserError, match="thumb.jpg"):  # the comparison page fails the same way
        write_picture(_pixels(), tmp_path / "ok.png", tmp_path / "blocker" / "thumb.jpg", (28, 20), 82)
    with pytest.raises(UserError, match="grid.jpg"):  # and so do the figures
        save_jpeg(tmp_path / "blocker" / "grid.jpg", _pixels())


def test_page_and_figures_write_the_writers_bytes(tmp_path):
    px = _pixels()
    write_picture(px, tmp_path / "full.png", tmp_path / "thumb.jpg", (28, 20), 82)
    write_image(tmp_path / "ref_full.png", px, fast_png=True)
    small = cv2.resize(px, (28, 20), interpolation=cv2.INTER_AREA)
    write_image(tmp_path / "ref_thumb.jpg", small, jpeg_quality=82)
    assert (tmp_path / "full.png").read_bytes() == (tmp_path / "ref_full.png").read_bytes()
    assert (tmp_path / "thumb.jpg").read_bytes() == (tmp_path / "ref_thumb.jpg").read_bytes()

    save_jpeg(tmp_path / "grid.jpg", px)
    write_image(tmp_path / "ref_grid.jpg", px, jpeg_quality=88)
    assert (tmp_path / "grid.jpg").read_bytes() == (tmp_path / "ref_grid.jpg").read_bytes()
    # and the pictures are what was given (RGB, not BGR): the PNG exactly, the JPEG close
    assert np.array_equal(read_image_raw(tmp_path / "full.png"), px)
    smooth = np.repeat(np.linspace(0, 255, 56, dtype=np.uint8)[None, :, None], 40, 0) * np.array([1, 0, 0], np.uint8)
    save_jpeg(tmp_path / "red.jpg", smooth)
    back = read_image_raw(tmp_path / "red.jpg").astype(int)
    assert np.abs(back - smooth).mean() < 4
