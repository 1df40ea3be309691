"""ICEML: dehazing losses on hand-made cases, the synthetic-haze dataset, both training stages."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from core import TRAINERS
from core.config import load_config
from data import build_dataset
from data.image_io import write_image
from foundation.errors import UserError
from losses import build_loss
from losses.dehaze import chromaticity, saturation_map
from models.physics import haze_image
from tests.helpers import make_image, write_yaml


def test_chromaticity_loss_ignores_brightness_and_sees_colour():
    img = torch.rand(2, 3, 8, 8) * 0.5 + 0.1
    loss = build_loss("chromaticity")
    assert loss(img, 1.7 * img).item() == pytest.approx(0.0, abs=1e-6)  # same colour, brighter
    tinted = img * torch.tensor([1.2, 1.0, 0.8]).view(1, 3, 1, 1)
    expected = (chromaticity(img) - chromaticity(tinted)).abs().mean().item()
    assert loss(img, tinted).item() == pytest.approx(expected, rel=1e-6) and expected > 0.01


def test_saturation_loss_on_hand_made_pixels():
    gray = torch.full((1, 3, 2, 2), 0.4)  # S = 0
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # S = 1
    half = torch.tensor([0.8, 0.4, 0.4]).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # S = 0.5
    loss = build_loss("saturation", target=0.5)
    assert loss(gray).item() == pytest.approx(0.5)
    assert loss(red).item() == pytest.approx(0.5)
    assert loss(half).item() == pytest.approx(0.0, abs=1e-6)
    assert saturation_map(half).mean().item() == pytest.approx(0.5)
    assert build_loss("saturation", target=0.5, kind="l2")(gray).item() == pytest.approx(0.25)


def test_inverse_consistency_is_zero_when_rehazing_reproduces_the_input():
    J = torch.rand(1, 3, 8, 8)
    t = torch.rand(1, 1, 8, 8) * 0.8 + 0.15
    a = torch.full((1, 3, 8, 8), 0.85)
    hazy = haze_image(J, t, a)
    loss = build_loss("inverse_consistency")
    assert loss(haze_image(J, t, a), hazy).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(haze_image(J * 0.5, t, a), hazy).item() == pytest.approx(
        ((J * 0.5 - J) * t).pow(2).mean().item(), rel=1e-5)


def _haze_data(root: Path, n: int = 6, size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        clear = make_image(size, 50 + i)
        t = np.linspace(0.9, 0.3, size, dtype=np.float32)[:, None].repeat(size, 1)
        a = round(float(rng.uniform(0.75, 0.95)), 5)
        hazy = clear * t[..., None] + a * (1 - t[..., None])
        write_image(root / "train" / "clear" / f"{i}.png", clear)
        write_image(root / "train" / "hazy" / f"{i}_1_{a:.5f}.png", hazy)
        write_image(root / "train" / "trans" / f"{i}_1.png", np.repeat(t[..., None], 3, 2))
        write_image(root / "unpaired" / f"u{i}.png", hazy[::-1].copy())
    return root


def test_synthetic_haze_dataset_pairs_by_id_and_reads_a_from_the_name(tmp_path):
    root = _haze_data(tmp_path)
    ds = build_dataset("haze_synthetic", root=str(root / "train"), crop_size=32, flip=True)
    assert len(ds) == 6
    item = ds[(2, 123)]
    assert item["lq"].shape == (3, 32, 32) and item["trans"].shape == (1, 32, 32)
    a = float(ds.items[2][3])
    assert torch.allclose(item["A"], torch.full((3,), a))
    # the crop is identical on all three: hazy = clear * t + A (1 - t) up to 8-bit rounding
    rebuilt = item["gt"] * item["trans"] + a * (1 - item["trans"])
    assert (rebuilt - item["lq"]).abs().max() < 3 / 255


def _iceml_cfg(tmp_path: Path, iters: int, pretrain: int) -> Path:
    root = _haze_data(tmp_path / "haze")
    cfg = {
        "name": "iceml_tiny", "seed": 1, "trainer": "iceml", "device": "cpu",
        "output_root": str(tmp_path / "exp"),
        "network": {"name": "RtxICE-Net", "args": {"dim": 16}},
        "data": {"num_workers": 0, "pin_memory": False, "batch_size": 2,
                 "paired": {"type": "haze_synthetic", "args": {"root": str(root / "train"), "crop_size": 32}},
                 "unpaired": {"type": "unpaired_folder", "args": {"root": str(root / "unpaired"), "crop_size": 32}}},
        "optim": {"type": "adam", "lr": 1e-3},
        "train": {"iters": iters, "ema_decay": None, "log_every": 2, "save_every": 2},
        "iceml": {"pretrain_iters": pretrain, "w_dcp_t": 0.1, "w_dcp_a": 0.1, "w_supervised": 0.5,
                  "w_rtx_inv": 0.1},
        "eval": {"after_train": False},
    }
    return write_yaml(tmp_path / "iceml.yaml", cfg)


def test_both_iceml_stages_run_and_train_both_networks(tmp_path):
    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path, iters=6, pretrain=3)))
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in tr.networks.items()}
    tr.start_streams()
    stages = []
    seen_terms = []
    for _ in range(6):
        stages.append(tr.stage)
        batch = tr.next_batches()
        tr.optimizer.zero_grad(set_to_none=True)
        terms = tr.train_step(batch)
        seen_terms.append(set(terms))
        assert all(torch.isfinite(v) for v in terms.values())
        tr.optimizer.step()
        tr.iter += 1
    assert stages == ["pretrain"] * 3 + ["mutual"] * 3
    assert {"rtx_j", "asm_j", "asm_t", "asm_a", "rtx_inv"} <= seen_terms[0]
    assert {"inverse", "chroma", "saturation", "dcp_t", "dcp_a", "sup_rtx_j"} <= seen_terms[-1]
    for k, net in tr.networks.items():
        changed = [not torch.equal(p, q) for p, q in zip(net.parameters(), before[k])]
        assert any(changed), k
    tr.close()


def test_iceml_keeps_the_label_budget_of_a_plain_paired_set(tmp_path):
    """``data.labelled_pairs`` on a SOTS-style hazy/clear folder keeps 2 of 6 pairs for stage 1 and
    moves the 4 withheld hazy inputs into the real (unpaired) pool, as the base trainer does; a copy
    of the base data set-up without the label budget trained on all 6 pairs silently."""
    root = _haze_data(tmp_path / "haze")
    paired = {"type": "paired_folder", "args": {"lq_dir": str(root / "train" / "hazy"),
                                                "gt_dir": str(root / "train" / "clear"), "crop_size": 32,
                                                "pairing": "prefix"}}
    cfg = yaml.safe_load(_iceml_cfg(tmp_path, iters=4, pretrain=2).read_text())
    cfg["data"]["paired"] = paired
    cfg["data"]["labelled_pairs"] = 2
    tr = TRAINERS.get("iceml")(load_config(write_yaml(tmp_path / "budget.yaml", cfg)))
    try:
        assert len(tr.paired_set) == 2
        assert sorted(tr.withheld_inputs) == sorted(str(p) for p in (root / "train" / "hazy").iterdir()
                                                    if str(p) not in {str(a) for a, _ in tr.paired_set.pairs})
        assert len(tr.unpaired_set) == 6 + 4
    finally:
        tr.close()


def test_iceml_learning_rate_switches_at_the_stage_boundary(tmp_path):
    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path, iters=10, pretrain=4),
                                           ["iceml.mutual_lr=1e-4", "scheduler.eta_min=0"]))
    assert tr.lr_factor(0) == pytest.approx(1.0)
    assert tr.lr_factor(4) == pytest.approx(0.1)  # mutual_lr / lr at the start of stage 2
    assert tr.lr_factor(9) < tr.lr_factor(5)
    tr.close()


def test_mutual_terms_recomputed_by_hand_couple_the_two_networks(tmp_path):
    """Stage 2 re-hazes RtxICE-Net's clean image with ASMICE-Net's t and A: I_rec = J_ret t + A (1 - t).

    Every term is recomputed here from the two networks' own outputs; re-hazing with ASMICE-Net's
    own J (or Rtx's own maps) gives a different inverse term, so the coupling is pinned.
    """
    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path, iters=4, pretrain=0),
                                           ["iceml.w_inverse=1.3", "iceml.w_chroma=0.7", "iceml.w_saturation=0.2",
                                            "iceml.w_dcp_t=0", "iceml.w_dcp_a=0", "iceml.w_mutual_l1=0.4"]))
    try:
        torch.manual_seed(3)
        hazy = torch.rand(2, 3, 32, 32) * 0.6 + 0.3
        terms = tr.mutual_terms(hazy)
        with torch.no_grad():
            j_ret, _ = tr.networks["rtx"].forward_maps(hazy)
            j_asm, t, a = tr.networks["asm"].forward_maps(hazy)
            t_used = t.clamp_min(tr.cfg.iceml.t_min)
            i_rec = j_ret * t_used + a * (1 - t_used)
            inverse = 1.3 * (i_rec - hazy).pow(2).mean()
            chroma = 0.7 * (chromaticity(j_ret.clamp(0, 1)) - chromaticity(j_asm.clamp(0, 1))).abs().mean()
            sat = 0.2 * ((saturation_map(j_ret.clamp(0, 1)) - 0.5).abs().mean()
                         + (saturation_map(j_asm.clamp(0, 1)) - 0.5).abs().mean())
            mutual = 0.4 * (j_ret - j_asm).abs().mean()
            wrong_coupling = 1.3 * ((j_asm * t_used + a * (1 - t_used)) - hazy).pow(2).mean()
        assert terms["inverse"].item() == pytest.approx(inverse.item(), rel=1e-5)
        assert terms["chroma"].item() == pytest.approx(chroma.item(), rel=1e-5)
        assert terms["saturation"].item() == pytest.approx(sat.item(), rel=1e-5)
        assert terms["mutual_l1"].item() == pytest.approx(mutual.item(), rel=1e-5)
        assert abs(wrong_coupling.item() - inverse.item()) > 1e-4 * inverse.item()
    finally:
        tr.close()


def test_supervised_terms_recomputed_by_hand(tmp_path):
    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path, iters=4, pretrain=4),
                                           ["iceml.w_rtx_inv=0.3", "iceml.w_asm_t=0.5", "iceml.w_asm_a=0.25"]))
    try:
        tr.start_streams()
        batch = next(tr.paired_stream)
        terms = tr.supervised_terms(batch)
        hazy, clear, trans, a_gt = batch["lq"], batch["gt"], batch["trans"], batch["A"]
        with torch.no_grad():
            j_ret, lr_inv = tr.networks["rtx"].forward_maps(hazy)
            j_asm, t, a = tr.networks["asm"].forward_maps(hazy)
            expected = {
                "rtx_j": (j_ret - clear).abs().mean(),
                "asm_j": (j_asm - clear).abs().mean(),
                "rtx_inv": 0.3 * (lr_inv - (clear / (hazy + 1e-8)).clamp(max=tr.cfg.iceml.inv_target_clamp)
                                  ).abs().mean(),
                "asm_t": 0.5 * (t - trans).abs().mean(),
                "asm_a": 0.25 * (a - a_gt.view(-1, 3, 1, 1).expand_as(a)).abs().mean(),
            }
        for k, v in expected.items():
            assert terms[k].item() == pytest.approx(v.item(), rel=1e-5), k
    finally:
        tr.close()


def _sots_like(root: Path, rooms=(1400, 1401), size: int = 40) -> Path:
    """SOTS-style folders: gt/<room>.png and hazy/<room>_<level>.png."""
    for r in rooms:
        clear = make_image(size, r)
        write_image(root / "gt" / f"{r}.png", clear)
        for lvl in (1, 4):
            t = 1 - 0.15 * lvl
            write_image(root / "hazy" / f"{r}_{lvl}.png", clear * t + 0.85 * (1 - t))
    return root


def test_field_haze_items_obey_the_scattering_model_with_known_t_and_a(tmp_path):
    root = _sots_like(tmp_path)
    ds = build_dataset("haze_field", gt_dir=str(root / "gt"), lq_dir=str(root / "hazy"), include=[1401],
                       synthetic_per_clear=3, crop_size=24, flip=True)
    kinds = [k for k, _, _ in ds.items]
    assert kinds == ["real", "real", "synthetic", "synthetic", "synthetic"]  # room 1401 only
    real = ds[(0, 5)]
    assert torch.isnan(real["trans"]).all() and torch.isnan(real["A"]).all()
    items = [ds[(i, 11)] for i in (2, 3)]
    for it in items:
        assert it["lq"].shape == (3, 24, 24) and it["trans"].shape == (1, 24, 24)
        a = float(it["A"][0])
        assert 0.7 <= a <= 1.0 and torch.all(it["A"] == a)
        t = it["trans"]
        assert float(t.min()) >= float(np.exp(-1.8 * 1.2)) - 1e-6 and float(t.max()) <= float(np.exp(-0.6 * 0.1))
        assert torch.allclose(it["lq"], haze_image(it["gt"], t, it["A"].view(3, 1, 1), t_min=0), atol=1e-6)
        assert float(t.std()) > 0.01  # a field, not a constant
    # every draw is new, and the same key draws the same haze (exact resume)
    assert not torch.equal(items[0]["trans"], ds[(2, 12)]["trans"])
    assert torch.equal(items[0]["lq"], ds[(2, 11)]["lq"])


def test_resize_and_ids_of_the_folder_datasets(tmp_path):
    root = _sots_like(tmp_path, size=40)
    un = build_dataset("unpaired_folder", root=str(root / "hazy"), exclude=[1400], resize=16)
    assert [f.name for f in un.files] == ["1401_1.png", "1401_4.png"]
    assert un[0]["lq"].shape == (3, 16, 16)
    pa = build_dataset("paired_folder", lq_dir=str(root / "hazy"), gt_dir=str(root / "gt"), pairing="prefix",
                       include=[1400], resize=20)
    assert pa[0]["lq"].shape == (3, 20, 20) == pa[0]["gt"].shape


def test_unknown_airlight_is_not_supervised_and_known_is(tmp_path):
    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path, iters=4, pretrain=4), ["iceml.w_asm_a=0.25"]))
    try:
        tr.start_streams()
        batch = next(tr.paired_stream)
        batch["A"][0] = float("nan")  # the first item is a real pair: A unknown
        batch["trans"][0] = float("nan")
        terms = tr.supervised_terms(batch)
        with torch.no_grad():
            _, t, a = tr.networks["asm"].forward_maps(batch["lq"])
            expected = 0.25 * (a[1:] - batch["A"][1:].view(-1, 3, 1, 1).expand_as(a[1:])).abs().mean()
        assert torch.isfinite(terms["asm_a"]) and terms["asm_a"].item() == pytest.approx(expected.item(), rel=1e-5)
        assert torch.isfinite(terms["asm_t"])
    finally:
        tr.close()


def test_stage_one_continued_trains_the_supervised_terms_only(tmp_path):
    off = ["iceml.w_inverse=0", "iceml.w_chroma=0", "iceml.w_saturation=0", "iceml.w_dcp_t=0", "iceml.w_dcp_a=0"]
    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path, iters=4, pretrain=2), [*off, "iceml.w_supervised=1"]))
    try:
        tr.iter = 2
        tr.start_streams()
        batch = tr.next_batches()
        assert batch["unpaired"] is None  # no unlabelled forward pass is spent
        terms = tr.train_step(batch)
        assert set(terms) == {"sup_rtx_j", "sup_asm_j", "sup_asm_t", "sup_asm_a", "sup_rtx_inv"}
    finally:
        tr.close()
    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path / "b", iters=4, pretrain=2),
                                           [*off, "iceml.w_supervised=0"]))
    try:
        tr.iter = 2
        tr.start_streams()
        with pytest.raises(UserError, match="nothing"):
            tr.train_step(tr.next_batches())
    finally:
        tr.close()


def test_t_min_survives_every_checkpoint_and_its_reader(tmp_path):
    """``iceml.t_min`` is ASMICE-Net's inversion clamp: the trained network, the run's training state,
    its weights files and the loader of eval.py / the final evaluation all build ASMICE-Net with it."""
    from common_utils.checkpoint import load_network, load_networks

    tr = TRAINERS.get("iceml")(load_config(_iceml_cfg(tmp_path, iters=2, pretrain=2), ["iceml.t_min=0.3"]))
    try:
        assert tr.networks["asm"].t_min == 0.3
        tr.save_checkpoint("last")
        tr.save_checkpoint("best")
    finally:
        tr.close()
    ck = tmp_path / "exp" / "iceml_tiny" / "checkpoints"
    for name in ("last.pth", "best.pth", "net_asm_iter_00000000.pth"):
        net, info = load_network("ASMICE-Net", ck / name)
        assert net.t_min == 0.3 and info["network_args"]["t_min"] == 0.3, name
    nets, _, _ = load_networks(ck / "best.pth")
    assert nets["asm"].t_min == 0.3 and not hasattr(nets["rtx"], "t_min")
