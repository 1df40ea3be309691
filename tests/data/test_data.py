"""Datasets (pairing, augmentation alignment and determinism), the resumable sampler and image I/O."""
from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.datasets import PairedFolderDataset
from data.image_io import ImageReadError, list_images, read_image, write_image
from data.samplers import ResumableSampler
from foundation.errors import UserError
from tests.helpers import make_image


def _write_set(folder: Path, stems: list[str], ext: str, images: dict[str, np.ndarray]) -> None:
    for s in stems:
        write_image(folder / f"{s}{ext}", images[s])


# --------------------------------------------------------------------------- pairing
def test_pairs_by_name_regardless_of_order_and_extension(tmp_path):
    stems = ["zeta", "alpha", "m10", "m2", "Beta"]
    gts = {s: make_image(24, i) for i, s in enumerate(stems)}
    lqs = {s: (np.round(gts[s] * 255 * 0.5) / 255).astype(np.float32) for s in stems}
    _write_set(tmp_path / "low", stems, ".png", lqs)
    # GT: other extension, written in another order, plus an extra GT file without a low image
    _write_set(tmp_path / "gt", list(reversed(stems)), ".bmp", gts)
    write_image(tmp_path / "gt" / "aaa_extra.bmp", make_image(24, 99))
    ds = PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "gt"))
    assert len(ds) == len(stems)
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        name = item["name"]
        seen.add(name)
        assert item["lq"].shape == (3, 24, 24) and item["gt"].shape == (3, 24, 24)
        np.testing.assert_array_equal(item["gt"].numpy().transpose(1, 2, 0), gts[name])
        np.testing.assert_array_equal(item["lq"].numpy().transpose(1, 2, 0), lqs[name])
    assert seen == set(stems)


def test_sorted_pairing_pairs_by_position(tmp_path):
    gts = [make_image(16, i) for i in range(3)]
    for i, g in enumerate(gts):
        write_image(tmp_path / "low" / f"low{i:02d}.png", g * 0.5)
        write_image(tmp_path / "high" / f"normal{i:02d}.png", g)
    with pytest.raises(UserError):  # names differ: name pairing fails
        PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"))
    ds = PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"), pairing="sorted")
    assert [p[0].name for p in ds.pairs] == ["low00.png", "low01.png", "low02.png"]
    assert [p[1].name for p in ds.pairs] == ["normal00.png", "normal01.png", "normal02.png"]
    for i in range(3):
        np.testing.assert_array_equal(ds[i]["gt"].numpy().transpose(1, 2, 0), gts[i])


def test_low_without_gt_names_both_folders(tmp_path):
    for s in ("a", "b", "orphan"):
        write_image(tmp_path / "low" / f"{s}.png", make_image(8, 0))
    for s in ("a", "b"):
        write_image(tmp_path / "high" / f"{s}.png", make_image(8, 0))
    with pytest.raises(UserError) as info:
        PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"))
    msg = str(info.value)
    assert str(tmp_path / "low") in msg and str(tmp_path / "high") in msg
    assert "orphan.png" in msg and "1 of 3" in msg
    assert "pairing: sorted" in msg


def test_sorted_count_mismatch_names_folders_and_counts(tmp_path):
    for i in range(3):
        write_image(tmp_path / "low" / f"{i}.png", make_image(8, i))
    for i in range(5):
        write_image(tmp_path / "high" / f"{i}.png", make_image(8, i))
    with pytest.raises(UserError) as info:
        PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"), pairing="sorted")
    msg = str(info.value)
    assert f"3 images in {tmp_path / 'low'}" in msg and f"5 in {tmp_path / 'high'}" in msg


def test_unknown_pairing_and_size_mismatch(tmp_path):
    write_image(tmp_path / "low" / "a.png", make_image(8, 0))
    write_image(tmp_path / "high" / "a.png", make_image(10, 0))
    with pytest.raises(UserError, match="unknown pairing 'by_size'"):
        PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"), pairing="by_size")
    ds = PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"))
    with pytest.raises(UserError, match="size mismatch") as info:
        ds[0]
    assert "a.png" in str(info.value) and "8x8" in str(info.value) and "10x10" in str(info.value)


# --------------------------------------------------------------------------- augmentation
def _coordinate_pair(tmp_path: Path, h: int = 40, w: int = 48) -> PairedFolderDataset:
    """GT encodes each pixel's position: R = x, G = y (grey levels); lq has the same R, G and B = 255 - B."""
    yy, xx = np.mgrid[0:h, 0:w]
    b = (xx * 3 + yy * 5) % 256
    gt = np.stack([xx, yy, b], axis=2).astype(np.float32) / 255
    lq = np.stack([xx, yy, 255 - b], axis=2).astype(np.float32) / 255
    write_image(tmp_path / "low" / "p.png", lq)
    write_image(tmp_path / "high" / "p.png", gt)
    return PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"), crop_size=32, flip=True)


def test_crop_and_flips_identical_on_lq_and_gt(tmp_path):
    ds = _coordinate_pair(tmp_path)
    origins, flips = set(), set()
    for seed in range(40):
        item = ds[(0, seed)]
        lq = np.round(item["lq"].numpy() * 255).astype(int)
        gt = np.round(item["gt"].numpy() * 255).astype(int)
        assert lq.shape == gt.shape == (3, 32, 32)
        # pixel-exact alignment: same source pixel at every position
        np.testing.assert_array_equal(lq[:2], gt[:2])
        np.testing.assert_array_equal(lq[2], 255 - gt[2])
        x, y = gt[0], gt[1]
        # a contiguous 32x32 window, possibly flipped: x varies along columns only, y along rows only
        dx, dy = np.diff(x, axis=1), np.diff(y, axis=0)
        assert np.all(dx == dx[0, 0]) and abs(dx[0, 0]) == 1 and np.all(np.diff(x, axis=0) == 0)
        assert np.all(dy == dy[0, 0]) and abs(dy[0, 0]) == 1 and np.all(np.diff(y, axis=1) == 0)
        origins.add((int(x.min()), int(y.min())))
        flips.add((int(dx[0, 0]), int(dy[0, 0])))
        assert x.max() - x.min() == 31 and 0 <= x.min() <= 48 - 32 and 0 <= y.min() <= 40 - 32
    assert flips == {(1, 1), (-1, 1), (1, -1), (-1, -1)}
    assert len(origins) > 10


def test_same_key_same_crop_and_plain_index_is_whole_image(tmp_path):
    ds = _coordinate_pair(tmp_path)
    a, b = ds[(0, 1234)], ds[(0, 1234)]
    assert np.array_equal(a["lq"].numpy(), b["lq"].numpy()) and np.array_equal(a["gt"].numpy(), b["gt"].numpy())
    others = [ds[(0, s)]["gt"].numpy() for s in range(1235, 1240)]
    assert any(not np.array_equal(o, a["gt"].numpy()) for o in others)
    whole = ds[0]
    assert whole["gt"].shape == (3, 40, 48)


def test_crop_larger_than_image_pads(tmp_path):
    write_image(tmp_path / "low" / "s.png", make_image((20, 28), 0))
    write_image(tmp_path / "high" / "s.png", make_image((20, 28), 0))
    ds = PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"), crop_size=32)
    item = ds[(0, 5)]
    assert item["lq"].shape == item["gt"].shape == (3, 32, 32)
    assert np.array_equal(item["lq"].numpy(), item["gt"].numpy())


def test_training_crop_equals_crop_of_the_full_float_image(tmp_path):
    """The dataset converts only the crop to float: values must equal cropping the converted frame."""
    from data.transforms import paired_random_crop, paired_random_flip

    rng = np.random.default_rng(3)
    img8 = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    img16 = rng.integers(0, 65536, (40, 52, 3), dtype=np.uint16)
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    cv2.imwrite(str(tmp_path / "low" / "a.png"), img8)
    cv2.imwrite(str(tmp_path / "high" / "a.png"), img16)
    ds = PairedFolderDataset(str(tmp_path / "low"), str(tmp_path / "high"), crop_size=24, flip=True)
    lq_full, gt_full = read_image(tmp_path / "low" / "a.png"), read_image(tmp_path / "high" / "a.png")
    for seed in range(6):
        item = ds[(0, seed)]
        g = np.random.default_rng(seed)
        ref = paired_random_flip(paired_random_crop([lq_full, gt_full], 24, g), g)
        assert np.array_equal(item["lq"].numpy(), ref[0].transpose(2, 0, 1))
        assert np.array_equal(item["gt"].numpy(), ref[1].transpose(2, 0, 1))


# --------------------------------------------------------------------------- sampler
def _stream(sampler: ResumableSampler, n: int) -> list[tuple[int, int]]:
    return list(itertools.islice(iter(sampler), n))


def test_sampler_resume_equals_tail_of_full_stream():
    n_items, bs = 10, 3  # 3 whole batches per epoch, one item dropped
    full = _stream(ResumableSampler(n_items, bs, seed=7), 10 * bs)
    for k in range(9):
        tail = _stream(ResumableSampler(n_items, bs, seed=7, start_iter=k), (10 - k) * bs)
        assert tail == full[k * bs:], k
    # every epoch visits distinct indices; epochs differ in order and augmentation seeds
    ipe = 3
    epochs = [full[e * ipe * bs:(e + 1) * ipe * bs] for e in range(3)]
    for ep in epochs:
        assert len({i for i, _ in ep}) == ipe * bs
    assert [i for i, _ in epochs[0]] != [i for i, _ in epochs[1]]
    assert {s for _, s in epochs[0]}.isdisjoint({s for _, s in epochs[1]})
    # another seed gives another stream
    assert _stream(ResumableSampler(n_items, bs, seed=8), 9) != full[:9]


def test_sampler_distributed_ranks_are_disjoint_within_an_epoch():
    n_items, bs, world = 23, 2, 3
    samplers = [ResumableSampler(n_items, bs, seed=1, rank=r, world_size=world) for r in range(world)]
    ipe = samplers[0].iters_per_epoch
    assert ipe == 23 // 3 // 2
    for epoch in range(3):
        shares = [set(s.epoch_indices(epoch).tolist()) for s in samplers]
        assert all(len(sh) == ipe * bs for sh in shares)
        for a, b in itertools.combinations(shares, 2):
            assert a.isdisjoint(b)
    # the streams themselves: first epoch of each rank disjoint
    first = [{i for i, _ in _stream(s, ipe * bs)} for s in samplers]
    for a, b in itertools.combinations(first, 2):
        assert a.isdisjoint(b)


def test_sampler_too_small_dataset():
    with pytest.raises(ValueError, match="too small"):
        ResumableSampler(5, 3, world_size=2)


# --------------------------------------------------------------------------- image I/O
def test_grayscale_png_becomes_rgb(tmp_path):
    gray = (np.arange(12 * 10, dtype=np.uint8) * 2).reshape(12, 10)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    img = read_image(tmp_path / "g.png")
    assert img.shape == (12, 10, 3) and img.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(img[:, :, c], gray / 255.0, atol=1e-7)


def test_rgba_png_drops_alpha_and_keeps_channel_order(tmp_path):
    bgra = np.zeros((6, 7, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 100, 200, 50  # B, G, R, A
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    img = read_image(tmp_path / "a.png")
    assert img.shape == (6, 7, 3)
    np.testing.assert_allclose(img[0, 0], np.array([200, 100, 10]) / 255.0, atol=1e-7)  # RGB


def test_16bit_png_scaled_by_65535(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint16)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 65535, 32768, 257
    cv2.imwrite(str(tmp_path / "d.png"), bgr)
    img = read_image(tmp_path / "d.png")
    assert img.dtype == np.float32 and img.shape == (4, 5, 3)
    np.testing.assert_allclose(img[0, 0], [257 / 65535, 32768 / 65535, 1.0], rtol=1e-6)
    gray16 = np.full((3, 3), 1000, np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    g = read_image(tmp_path / "g16.png")
    assert g.shape == (3, 3, 3) and np.allclose(g, 1000 / 65535)


def test_write_read_round_trip_is_exact_for_8bit_values(tmp_path):
    img = make_image((9, 13), 4)
    write_image(tmp_path / "sub" / "r.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "r.png"), img)


def test_npy_arrays(tmp_path):
    arr = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", arr)
    np.testing.assert_array_equal(read_image(tmp_path / "x.npy"), arr)


@pytest.mark.parametrize("content", ["truncated", "garbage", "empty"])
def test_unreadable_png_raises_image_read_error(tmp_path, content):
    write_image(tmp_path / "ok.png", make_image(32, 0))
    data = (tmp_path / "ok.png").read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes({"truncated": data[: len(data) * 2 // 3], "garbage": b"not an image at all" * 10,
                     "empty": b""}[content])
    with pytest.raises(ImageReadError) as info:
        read_image(bad)
    assert str(bad) in str(info.value)


def test_truncated_png_missing_only_its_end_marker(tmp_path):
    write_image(tmp_path / "ok.png", make_image(32, 0))
    data = (tmp_path / "ok.png").read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[:-12])  # pixel data complete, only the IEND chunk lost
    # some decoders accept such a file: the reader must still refuse it (either check may catch it)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(bad)


def test_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_list_images_ignores_other_files(tmp_path):
    write_image(tmp_path / "b.png", make_image(4, 0))
    write_image(tmp_path / "c.bmp", make_image(4, 0))
    (tmp_path / "a.JPG").write_bytes(b"x")  # listed by extension (case-insensitive), not decoded
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "d.png", make_image(4, 0))
    assert [f.name for f in list_images(tmp_path)] == ["a.JPG", "b.png", "c.bmp"]
    assert [f.relative_to(tmp_path).as_posix() for f in list_images(tmp_path, recursive=True)] == \
        ["a.JPG", "b.png", "c.bmp", "sub/d.png"]


def test_empty_or_missing_folder_is_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(UserError, match="no images in"):
        list_images(tmp_path / "empty")
    with pytest.raises(UserError, match="image folder not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(UserError, match="image folder not found"):
        PairedFolderDataset(str(tmp_path / "missing"), str(tmp_path / "empty"))
