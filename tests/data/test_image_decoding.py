"""Images are decoded by content, upright, and an unreadable one is named once (data/image_io.py).

What a folder of one's own photographs holds: a BMP saved as ``.png``, a text file named ``.png``,
phone pictures whose EXIF tag says "rotate 90 degrees", and a corrupt file among the validation images.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

import run
from common_utils.evaluation import eval_with_any_backbone
from data.image_io import ImageReadError, read_image, write_image
from tests.helpers import make_image, tiny_config, write_yaml


def _jpeg_with_orientation(img: np.ndarray, orientation: int) -> bytes:
    """A JPEG of ``img`` (float RGB) with an EXIF APP1 segment holding only the orientation tag."""
    ok, buf = cv2.imencode(".jpg", np.round(img[:, :, ::-1] * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    data = buf.tobytes()
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_a_bmp_named_png_is_read_as_the_bmp_it_is(tmp_path):
    img = make_image((20, 30), 1)
    write_image(tmp_path / "real.bmp", img)
    (tmp_path / "photo.png").write_bytes((tmp_path / "real.bmp").read_bytes())
    np.testing.assert_array_equal(read_image(tmp_path / "photo.png"), img)


def test_a_text_file_named_png_is_called_not_an_image_not_truncated(tmp_path):
    (tmp_path / "notes.png").write_text("shopping list\n" * 20)
    with pytest.raises(ImageReadError, match="content is not an image") as err:
        read_image(tmp_path / "notes.png")
    assert "truncated" not in str(err.value)


def test_a_truncated_png_named_jpg_is_called_truncated_png(tmp_path):
    write_image(tmp_path / "a.png", make_image(32, 2))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="the PNG file is truncated"):
        read_image(tmp_path / "a.jpg")


@pytest.mark.parametrize("orientation,turn", [(1, lambda a: a), (6, lambda a: np.rot90(a, -1)),
                                              (8, lambda a: np.rot90(a, 1)), (3, lambda a: np.rot90(a, 2))])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    img = np.zeros((24, 40, 3), np.float32)
    img[:, :12] = 1.0  # a white band on the left
    (tmp_path / "phone.jpg").write_bytes(_jpeg_with_orientation(img, orientation))
    got = read_image(tmp_path / "phone.jpg")
    want = turn(img)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 0.02


def test_enhancing_a_folder_reads_every_file_by_content_upright(tmp_path, capsys):
    import torch

    from models import build_network

    torch.manual_seed(0)
    torch.save(build_network("UNet", width=4).state_dict(), tmp_path / "w.pth")
    src = tmp_path / "photos"
    src.mkdir()
    write_image(tmp_path / "b.bmp", make_image((24, 32), 3))
    (src / "bmp_as.png").write_bytes((tmp_path / "b.bmp").read_bytes())
    (src / "phone.jpg").write_bytes(_jpeg_with_orientation(make_image((24, 40), 4), 6))
    (src / "text.png").write_text("not an image")
    code = eval_with_any_backbone.main(["-n", "UNet", "-w", str(tmp_path / "w.pth"), "--network-args",
                                        '{"width": 4}', "--device", "cpu", "--workers", "2", "--set", str(src),
                                        "--output", str(tmp_path / "out")])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["bmp_as.png", "phone.png"]
    assert read_image(tmp_path / "out" / "phone.png").shape == (40, 24, 3)  # upright: 40 high, 24 wide
    warnings = [ln for ln in cap.err.splitlines() if "text.png" in ln]
    assert len(warnings) == 1 and "content is not an image" in warnings[0]
    assert "enhanced 2 of 3 image(s)" in cap.out and "1 unreadable" in cap.out


def test_a_corrupt_validation_image_is_named_in_the_log(tmp_path, capsys):
    cfg = tiny_config(tmp_path, name="val", iters=2)
    bad = tmp_path / "data" / "val" / "low" / "img_001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    cfg["train"]["val_every"] = 1
    assert run.main(["-c", str(write_yaml(tmp_path / "v.yaml", cfg)), "--no-eval"]) == 0
    log = (tmp_path / "experiments" / "val" / "logs" / "train.log").read_text()
    lines = [ln for ln in log.splitlines() if "validation leaves out" in ln]
    assert len(lines) == 1 and str(bad) in lines[0] and "truncated" in lines[0]  # once, not at every validation
