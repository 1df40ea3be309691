"""Config loading: ``_base_`` inheritance, dotted overrides, validation messages, immutability, saving."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config import Config, ConfigError, load_config, load_yaml_with_bases
from tests.helpers import REPO_ROOT, tiny_config, write_yaml


@pytest.fixture()
def base_cfg(tmp_path: Path) -> dict:
    return tiny_config(tmp_path)


@pytest.fixture()
def cfg_file(tmp_path: Path, base_cfg: dict) -> Path:
    return write_yaml(tmp_path / "cfg.yaml", base_cfg)


def _error(path: Path, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# --------------------------------------------------------------------------- _base_ inheritance
def test_single_base_relative_to_including_file(tmp_path, base_cfg, monkeypatch):
    write_yaml(tmp_path / "bases" / "base.yaml", base_cfg)
    child = write_yaml(tmp_path / "exps" / "child.yaml",
                       {"_base_": "../bases/base.yaml", "name": "child", "train": {"iters": 3},
                        "network": {"args": {"bilinear": True}}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the base path is relative to child.yaml, not to the working directory
    cfg = load_config(child)
    assert cfg.name == "child"
    assert cfg.train.iters == 3
    # mappings merge key by key: the base's other train keys survive
    assert cfg.train.val_every == base_cfg["train"]["val_every"]
    assert cfg.train.ema_decay == 0.99
    assert cfg.network.name == "UNet"
    assert dict(cfg.network.args) == {"width": 4, "bilinear": True}
    # lists are replaced, not merged
    assert [loss.name for loss in cfg.losses] == ["l1", "ssim"]
    assert "_base_" not in cfg


def test_list_of_bases_later_wins_and_child_wins_over_all(tmp_path, base_cfg):
    write_yaml(tmp_path / "a.yaml", base_cfg)
    write_yaml(tmp_path / "b.yaml", {"train": {"iters": 11, "log_every": 7}, "optim": {"lr": 5.0e-4},
                                     "losses": ["l1"]})
    child = write_yaml(tmp_path / "c.yaml", {"_base_": ["a.yaml", "b.yaml"], "train": {"log_every": 9}})
    cfg = load_config(child)
    assert cfg.train.iters == 11           # from b (overrides a)
    assert cfg.train.log_every == 9        # child overrides both
    assert cfg.train.save_every == 2       # only in a
    assert cfg.optim.lr == pytest.approx(5e-4)
    assert [loss.name for loss in cfg.losses] == ["l1"]   # list replaced; bare string -> {name: ...}
    assert cfg.losses[0].weight == 1.0


def test_diamond_inheritance_is_not_a_loop(tmp_path, base_cfg):
    write_yaml(tmp_path / "root.yaml", base_cfg)
    write_yaml(tmp_path / "left.yaml", {"_base_": "root.yaml", "seed": 1})
    write_yaml(tmp_path / "right.yaml", {"_base_": "root.yaml", "train": {"iters": 4}})
    top = write_yaml(tmp_path / "top.yaml", {"_base_": ["left.yaml", "right.yaml"]})
    cfg = load_config(top)  # root.yaml is reached twice, through two chains: not a loop
    assert cfg.train.iters == 4
    # each base is fully resolved before merging, so right.yaml (with root's seed 3) comes after left.yaml
    assert cfg.seed == 3


def test_base_loop_is_detected(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"_base_": "b.yaml", "name": "a"})
    write_yaml(tmp_path / "b.yaml", {"_base_": "sub/../a.yaml", "name": "b"})
    with pytest.raises(ConfigError, match="loops"):
        load_yaml_with_bases(tmp_path / "a.yaml")
    write_yaml(tmp_path / "self.yaml", {"_base_": "self.yaml"})
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "self.yaml")


def test_missing_base_names_the_file(tmp_path):
    child = write_yaml(tmp_path / "child.yaml", {"_base_": "nope.yaml", "name": "x"})
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(child)


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrain: {iters: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML at line"):
        load_config(p)


# --------------------------------------------------------------------------- overrides
def test_dotted_overrides(cfg_file):
    cfg = load_config(cfg_file, ["train.iters=5", "optim.lr=2e-4", "optim.betas=[0.8, 0.95]",
                                 "train.amp=bf16", "network.args.bilinear=true", "train.grad_clip=0.5",
                                 "data.val.batch_size=3"])
    assert cfg.train.iters == 5 and type(cfg.train.iters) is int
    # PyYAML reads "2e-4" as a string; a float key must turn it into a float
    assert type(cfg.optim.lr) is float and cfg.optim.lr == pytest.approx(2e-4, rel=1e-12)
    assert tuple(cfg.optim.betas) == (0.8, 0.95)
    assert cfg.train.amp == "bf16"
    assert cfg.network.args.bilinear is True and cfg.network.args.width == 4
    assert cfg.train.grad_clip == 0.5
    assert cfg.data.val.batch_size == 3


def test_override_value_is_not_evaluated(cfg_file):
    cfg = load_config(cfg_file, ["name=__import__('os')"])
    assert cfg.name == "__import__('os')"


def test_override_without_equals_sign(cfg_file):
    assert "key.sub=value" in _error(cfg_file, ["train.iters"])


# --------------------------------------------------------------------------- validation messages
def test_unknown_override_key_suggests_closest(cfg_file):
    msg = _error(cfg_file, ["train.itres=5"])
    assert "'train.itres'" in msg
    assert "did you mean 'train.iters'" in msg
    assert str(cfg_file) in msg


def test_unknown_key_in_file_suggests_closest(tmp_path, base_cfg):
    base_cfg["optim"]["weight_decy"] = 0.1
    msg = _error(write_yaml(tmp_path / "c.yaml", base_cfg), [])
    assert "unknown config key 'optim.weight_decy'" in msg and "'optim.weight_decay'" in msg


def test_unknown_key_inside_list_item(cfg_file):
    msg = _error(cfg_file, ["losses=[{name: l1, wieght: 2}]"])
    assert "losses[0].wieght" in msg and "losses[0].weight" in msg


@pytest.mark.parametrize("override, key, expected", [
    ("train.iters=abc", "train.iters", "int"),
    ("train.iters=2.5", "train.iters", "int"),
    ("data.num_workers=true", "data.num_workers", "int"),
    ("optim.lr=fast", "optim.lr", "int or float"),
    ("train.tf32=1", "train.tf32", "bool"),
    ("optim.betas=0.9", "optim.betas", "list"),
    ("name=", "name", "str"),
])
def test_wrong_type_names_key_and_expected_type(cfg_file, override, key, expected):
    msg = _error(cfg_file, [override])
    assert f"'{key}'" in msg
    assert expected in msg


def test_section_given_a_scalar(cfg_file):
    msg = _error(cfg_file, ["train=5"])
    assert "'train'" in msg and "mapping" in msg


def test_bad_choice_lists_choices_and_suggests(cfg_file):
    msg = _error(cfg_file, ["optim.type=AdamWW"])
    assert "'optim.type'" in msg and "adamw, adam" in msg and "did you mean 'adamw'" in msg
    msg = _error(cfg_file, ["validation.ssim=Y2"])
    assert "'validation.ssim'" in msg and "y, rgb, piq" in msg


def test_required_key_missing(tmp_path, base_cfg):
    del base_cfg["name"]
    msg = _error(write_yaml(tmp_path / "c.yaml", base_cfg), [])
    assert "'name' is required" in msg


def test_unknown_network_argument_suggests_closest(cfg_file):
    msg = _error(cfg_file, ["network.args.widht=8"])
    assert "'network.args.widht'" in msg and "did you mean 'network.args.width'" in msg
    assert "UNet" in msg


def test_unknown_dataset_argument_suggests_closest(cfg_file):
    msg = _error(cfg_file, ["data.paired.args.crop_sise=16"])
    assert "'data.paired.args.crop_sise'" in msg and "'data.paired.args.crop_size'" in msg


def test_unknown_network_name_suggests_closest(cfg_file):
    with pytest.raises(Exception) as info:  # UnknownNameError, a UserError
        load_config(cfg_file, ["network.name=Unet2"])
    assert "unknown network 'Unet2'" in str(info.value) and "did you mean 'UNet'" in str(info.value)


def test_defaults_are_filled(cfg_file):
    cfg = load_config(cfg_file)
    assert cfg.optim.weight_decay == 0.0
    assert cfg.train.max_nonfinite == 5
    assert cfg.eval.tile is None
    assert cfg.demo_data.kind == "lowlight"
    assert cfg._source == str(cfg_file)


# --------------------------------------------------------------------------- immutability
def test_config_is_read_only(cfg_file):
    cfg = load_config(cfg_file)
    with pytest.raises(TypeError):
        cfg.train.iters = 3
    with pytest.raises(TypeError):
        cfg.name = "other"
    with pytest.raises(TypeError):
        cfg["name"] = "other"  # type: ignore[index]
    assert isinstance(cfg.losses, tuple) and isinstance(cfg.optim.betas, tuple)
    with pytest.raises(AttributeError):
        cfg.optim.betas.append(0.5)  # type: ignore[attr-defined]
    assert isinstance(cfg.train, Config)
    # to_dict is a deep mutable copy: changing it does not change the config
    d = cfg.to_dict()
    d["train"]["iters"] = 999
    d["optim"]["betas"].append(0.1)
    assert cfg.train.iters == 8 and len(cfg.optim.betas) == 2
    with pytest.raises(AttributeError):
        cfg.train.no_such_key  # noqa: B018


def test_config_survives_copy_and_pickle(cfg_file):
    import copy
    import pickle

    cfg = load_config(cfg_file)
    for clone in (copy.copy(cfg), copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert clone == cfg and clone.to_dict() == cfg.to_dict()
        assert isinstance(clone.train, Config) and clone.train.iters == 8
        with pytest.raises(TypeError):
            clone.train.iters = 1


# --------------------------------------------------------------------------- saved by a run
def test_run_saves_resolved_config(tmp_path, cfg_file):
    from core import TRAINERS

    cfg = load_config(cfg_file, ["train.iters=5", "optim.lr=3e-4", "name=saved_cfg"])
    trainer = TRAINERS.get("supervised")(cfg)
    try:
        saved = tmp_path / "experiments" / "saved_cfg" / "config.yaml"
        assert trainer.exp_dir == saved.parent
        assert saved.is_file()
        data = yaml.safe_load(saved.read_text())
        expected = cfg.to_dict()
        expected.pop("_source")
        assert data == expected
        assert data["train"]["iters"] == 5 and data["optim"]["lr"] == pytest.approx(3e-4)
        assert data["optim"]["weight_decay"] == 0.0  # defaults are written out too
        # the saved file is itself a valid config that loads to the same values
        again = load_config(saved)
        assert {k: v for k, v in again.to_dict().items() if k != "_source"} == expected
    finally:
        trainer.close()


# --------------------------------------------------------------------------- second hardening pass
def test_a_key_written_twice_is_refused_with_both_lines(tmp_path, cfg_file):
    text = cfg_file.read_text() + "seed: 7\nseed: 8\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"key 'seed' is written twice \(lines \d+ and \d+\)"):
        load_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text(cfg_file.read_text() + "optim:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")
    with pytest.raises(ConfigError, match="written twice"):  # the same key in a nested mapping, or twice 'optim'
        load_config(nested)


def test_a_folder_given_as_the_config_says_so_and_offers_its_files(tmp_path, cfg_file):
    with pytest.raises(ConfigError, match=r"is a folder; give a config file \(.yaml\) such as .*\.yaml"):
        load_config(cfg_file.parent)


@pytest.mark.parametrize("seed,words", [(-1, "at least 0"), (2 ** 40, "at most 2147483647"),
                                        (10 ** 30, "at most")])
def test_seeds_out_of_range_are_config_errors(cfg_file, seed, words):
    for key in ("seed", "data.label_split_seed", "demo_data.seed"):
        with pytest.raises(ConfigError, match=f"'{key}' must be {words}"):
            load_config(cfg_file, [f"{key}={seed}"])
    assert load_config(cfg_file, [f"seed={2 ** 31 - 1}"]).seed == 2 ** 31 - 1


@pytest.mark.parametrize("word", ["gpu", "cuda0", "GPU:1", "tpu"])
def test_device_words_outside_the_rule_are_config_errors(cfg_file, word):
    with pytest.raises(ConfigError, match="config key 'device' must be one of auto, cpu, cuda, cuda:N, mps"):
        load_config(cfg_file, [f"device={word}"])


def test_a_mapping_of_another_type_replaces_the_one_it_overrides():
    from core.config import deep_merge

    base = {"paired": {"type": "haze_synthetic", "args": {"root": "ITS", "crop_size": 256}}, "lr": 1}
    same = deep_merge(base, {"paired": {"args": {"crop_size": 64}}})
    assert same["paired"]["args"] == {"root": "ITS", "crop_size": 64}  # same type: merged key by key
    other = deep_merge(base, {"paired": {"type": "haze_field", "args": {"gt_dir": "gt"}}})
    assert other["paired"] == {"type": "haze_field", "args": {"gt_dir": "gt"}}  # no 'root' left behind
    assert deep_merge(base, {"paired": {"type": "haze_synthetic"}})["paired"]["args"]["root"] == "ITS"


ROOT = REPO_ROOT
LINKED = ("datasets/LOL/our485", "datasets/LOL/eval15", "datasets/SICE_dark", "datasets/SOTS/indoor",
          "datasets/DAWN/Fog")  # what scripts/link_datasets.py lays out


def _paths(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _paths(v)
    elif isinstance(node, list):
        for v in node:
            yield from _paths(v)
    elif isinstance(node, str) and node.startswith("datasets/"):
        yield node


@pytest.mark.parametrize("path", sorted((ROOT / "config" / "local").glob("*.yaml")), ids=lambda p: p.stem)
def test_local_variants_run_every_phase_on_linked_data(path):
    paper = ROOT / "config" / path.name
    assert paper.is_file(), f"{path.name} has no paper config beside it"
    raw = load_yaml_with_bases(path)
    cfg = load_config(str(path))
    assert cfg.trainer == load_config(str(paper)).trainer and cfg.network.name == load_config(str(paper)).network.name
    used = set(_paths({k: raw[k] for k in ("data", "eval") if k in raw}))
    assert used and all(p.startswith(LINKED) for p in used), sorted(used)
    if cfg.trainer == "mean_teacher":  # the semi-supervised phase starts before the run ends
        assert cfg.ssll.semi_start_epoch < cfg.train.epochs
    if cfg.trainer == "iceml":  # stage 2 runs
        assert cfg.iceml.pretrain_iters < cfg.train.iters
