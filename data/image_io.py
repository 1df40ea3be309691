"""Reading and writing images as float32 RGB in [0, 1].

Every reader returns an ``(H, W, 3)`` float32 array whatever the file holds: grayscale is
repeated to three channels, alpha is dropped, 16-bit data is scaled by 65535. A file that cannot
be decoded raises :class:`ImageReadError` naming the file, never a deep library error. Files are
decoded by their content (the extension only selects which files of a folder are images), and the
EXIF orientation of photos is applied.

:func:`write_image` is the one writer of images (training samples, evaluation outputs, comparison
pages, figures): atomic, and every failure a UserError naming the file.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import cv2
import numpy as np

from foundation.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".npy")

cv2.setNumThreads(0)  # decoding runs inside loader workers; no nested thread pools


class ImageReadError(UserError):
    """An image file that is missing, truncated or not an image."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True for the file extensions the framework reads."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _rgb_view(arr: np.ndarray, path: str, bgr: bool) -> np.ndarray:
    """(H, W, 3) RGB in the decoded pixel type: gray repeated, alpha dropped, BGR reversed (a view)."""
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if not (arr.dtype in (np.uint8, np.uint16) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageReadError(f"{path}: unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: unsupported image shape {arr.shape}")
    c = arr.shape[2]
    if c in (1, 2):  # gray, gray+alpha
        return np.repeat(arr[:, :, :1], 3, axis=2)
    arr = arr[:, :, :3]
    return arr[:, :, ::-1] if bgr else arr


def image_to_float(arr: np.ndarray) -> np.ndarray:
    """A :func:`read_image_raw` array (or a crop of it) as contiguous float32 RGB in [0, 1].

    Elementwise, so cropping before converting gives the same values as converting first; the
    training datasets crop first and convert only the crop (the full-frame conversion cost as
    much as the PNG decoding, BENCHMARKS.md section 3c).
    """
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        scale = np.float32(255.0 if arr.dtype == np.uint8 else 65535.0)
        return np.ascontiguousarray(arr, dtype=np.float32) / scale  # in [0, 1] by construction
    return np.ascontiguousarray(np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0))


#: leading bytes of the formats the framework reads -> format name (what a file *is*, whatever its name)
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"), (b"\x93NUMPY", "NPY"),
)


def sniff_format(head: bytes) -> str | None:
    """The image format of a file from its first bytes (PNG, JPEG, BMP, TIFF, WEBP, NPY), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)


def read_image_raw(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (or ``.npy`` array) as (H, W, 3) RGB in its stored pixel type.

    The format is read from the file's content, not its name (a BMP named ``.png`` is read as the
    BMP it is); the EXIF orientation of a photo is applied (a phone picture comes out upright).
    uint8 and uint16 stay integers (convert with :func:`image_to_float`); floats are kept as is.
    """
    p = str(path)
    if not os.path.isfile(p):
        raise ImageReadError(f"{p}: file not found")
    data = np.fromfile(p, dtype=np.uint8)
    if not data.size:
        raise ImageReadError(f"{p}: the file is empty")
    kind = sniff_format(data[:16].tobytes())
    if kind == "NPY" or (kind is None and p.lower().endswith(".npy")):
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # a corrupt array is a user data problem
            raise ImageReadError(f"{p}: cannot read the array ({exc.__class__.__name__})") from None
        return _rgb_view(arr, p, bgr=False)
    if kind is not None and not _looks_complete(kind, data):  # checked first: the decoder would print its own line
        raise ImageReadError(f"{p}: the {kind} file is truncated")
    # IMREAD_COLOR applies the EXIF orientation (IMREAD_UNCHANGED does not); ANYDEPTH keeps 16-bit
    # and float data. Gray comes back repeated to three channels and alpha dropped, as _rgb_view does.
    arr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if arr is None:
        what = ("its content is not an image (it does not start like a PNG, JPEG, BMP, TIFF or WebP file, "
                "whatever its name says)" if kind is None else f"the {kind} data cannot be decoded")
        raise ImageReadError(f"{p}: not a readable image: {what}")
    return _rgb_view(arr, p, bgr=True)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (or an ``.npy`` array, HWC uint8/float) as float32 RGB (H, W, 3) in [0, 1]."""
    return image_to_float(read_image_raw(path))


def _looks_complete(kind: str, data: np.ndarray) -> bool:
    """Detect truncated PNG/JPEG files that decoders partially accept (trailing bytes are fine)."""
    if kind == "PNG":
        # the IEND chunk closes a PNG: look at the tail first, the whole file only if it is not there
        return b"IEND" in data[-64:].tobytes() or b"IEND" in data.tobytes()
    if kind == "JPEG":
        return data.tobytes().rfind(b"\xff\xd9") > 2
    return True


_ENCODED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: fastest zlib level with run-length matching: ~35% faster than level 1's default strategy on LOL frames,
#: and smaller files (BENCHMARKS.md, "Comparison pages")
_PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8 (rounded, clipped); a uint8 image as it is."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.round(arr.astype(np.float32, copy=False) * 255.0), 0, 255).astype(np.uint8)


def write_image(path: str | os.PathLike, img: np.ndarray, jpeg_quality: int | None = None,
                fast_png: bool = False) -> None:
    """Write an RGB (H, W, 3) image, float in [0, 1] or uint8, as 8-bit; the folder is created if needed.

    THE image writer of the framework. Encoded as the extension says (PNG for extensions OpenCV is
    not asked to write); ``jpeg_quality`` overrides OpenCV's default of 95 for JPEG files,
    ``fast_png`` trades compression for speed (the comparison pages). The file is written under a
    temporary name beside it (``.<name>.<random>.tmp``) and renamed: ``path`` is either its old
    content or the complete new image, never a partial one. Any failure raises a UserError naming ``path``.
    """
    p = Path(path)
    arr = to_uint8(img)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    ext = p.suffix.lower() if p.suffix.lower() in _ENCODED_EXTENSIONS else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if jpeg_quality and ext in (".jpg", ".jpeg") else []
    if fast_png and ext == ".png":
        params = _PNG_FAST
    try:
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr), params)
    except cv2.error:
        ok = False
    if not ok:
        raise UserError(f"{p}: cannot encode the image as {ext} (shape {arr.shape})")
    _write_atomic(p, buf.data)


def _write_atomic(path: Path, data: memoryview | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it to ``path`` (a UserError on failure)."""
    token = secrets.token_hex(4)
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    if len(tmp.name.encode("utf-8")) > 255:  # a long name: the temporary file gets a short one
        tmp = path.with_name(f".{token}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a name no other writer holds; mode 0666 under the umask (the usual mode of a new file)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` sorted by name; raises a UserError for a missing or empty folder."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    it = root.rglob("*") if recursive else root.iterdir()
    files = sorted((f for f in it if f.is_file() and is_image_file(f)), key=lambda f: str(f.relative_to(root)))
    if not files:
        raise UserError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def has_images(folder: Path, recursive: bool, pattern: str | None = None) -> bool:
    """True when ``folder`` holds at least one readable-type image (matching ``pattern`` if given)."""
    if not folder.is_dir():
        return False
    it = folder.rglob(pattern or "*") if recursive else folder.glob(pattern or "*")
    return any(f.is_file() and is_image_file(f) for f in it)
