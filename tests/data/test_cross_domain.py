"""Cross-domain test sets (issue 21 item 5): committed manifests as named sets, and the layout script.

On generated images only: the committed manifests resolve by name on a tiny fixture in their
layout (only the listed pairs), manifest errors name the file and key, and the layout script
extracts from a git clone, checks sha256, refuses a set that shares a scene with the reference
folders and copies the files unchanged.
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from data.cross_domain import SIDES, manifest_paths, read_manifest
from data.image_io import write_image
from data.layouts import expand_dataset_names, open_layout
from foundation.errors import UserError
from tests.helpers import REPO_ROOT, make_image

ROOT = REPO_ROOT


def _script():
    spec = importlib.util.spec_from_file_location("_prepare_cross_domain", ROOT / "scripts" / "prepare_cross_domain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_committed_manifests_are_named_sets_that_read_only_their_pairs(tmp_path):
    paths = manifest_paths()
    assert paths, "no data/cross_domain_*.yaml committed"
    for path in paths:
        m = read_manifest(path)
        assert expand_dataset_names(m.name) == [m.name]  # eval.py --dataset <name> knows it
        folder = tmp_path / m.folder
        for i, pair in enumerate(m.pairs):
            gt = make_image((32, 40), i)
            write_image(folder / "high" / pair.file_name("high"), gt)
            write_image(folder / "low" / pair.file_name("low"), gt * 0.2)
        for side in SIDES:  # a pair on disk that the manifest does not list is not read
            write_image(folder / side / "stray.png", make_image(32, 99))
        ds = open_layout(m.name, str(tmp_path))
        assert sorted(ds[i]["name"] for i in range(len(ds))) == sorted(p.id for p in m.pairs)
        assert ds[0]["lq"].shape == ds[0]["gt"].shape == (3, 32, 40)
        gone = m.pairs[-1].file_name("low")
        (folder / "low" / gone).unlink()
        with pytest.raises(UserError, match=gone):
            open_layout(m.name, str(tmp_path))


def _entry(pid: str, low: Path, high: Path, repo: str, commit: str, rel: Path) -> dict:
    return {"id": pid, **{side: {"repo": repo, "commit": commit, "path": str(f.relative_to(rel)), "sha256": _sha(f)}
                          for side, f in (("low", low), ("high", high))}}


def test_manifest_errors_name_the_file_and_the_key(tmp_path):
    good = {"repo": "a/b", "commit": "0" * 40, "path": "x.png", "sha256": "f" * 64}
    cases = {
        "pairs\\[0\\].high lacks sha256": [{"id": "p", "low": good, "high": {**good, "sha256": ""}}],
        "pairs\\[0\\].low.commit": [{"id": "p", "low": {**good, "commit": "abc"}, "high": good}],
        "pairs\\[1\\].id 'p' appears twice": [{"id": "p", "low": good, "high": good}] * 2,
        "not an image": [{"id": "p", "low": {**good, "path": "x.txt"}, "high": good}],
    }
    for i, (message, pairs) in enumerate(cases.items()):
        path = tmp_path / f"m{i}.yaml"
        path.write_text(yaml.safe_dump({"name": f"bad{i}", "pairs": pairs}))
        with pytest.raises(UserError, match=f"{path.name}.*{message}"):
            read_manifest(path)


def test_prepare_extracts_checks_sha256_refuses_overlap_and_copies_unchanged(tmp_path):
    prepare = _script().prepare
    clone = tmp_path / "mirrors" / "owner+pics"  # a git clone the files are extracted from
    for i in range(2):
        gt = make_image((48, 72), 10 + i)
        write_image(clone / "g" / f"{i}_gt.png", gt)
        write_image(clone / "g" / f"{i}_in.jpg", gt * 0.25)
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "pics"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    pairs = [_entry(f"p{i}", clone / "g" / f"{i}_in.jpg", clone / "g" / f"{i}_gt.png", "owner/pics", commit, clone)
             for i in range(2)]
    manifest = tmp_path / "cross_domain_t.yaml"
    manifest.write_text(yaml.safe_dump({"name": "XD-prepare-test", "pairs": pairs}))
    refs = tmp_path / "lol_high"
    write_image(refs / "1.png", make_image((40, 60), 500))
    src, root = tmp_path / "src", tmp_path / "root"

    assert prepare(manifest, src, tmp_path / "mirrors", root, references=[refs]) == 0
    laid = root / "XD-prepare-test"
    for i in range(2):  # extracted under <src>/<owner>+<name>/<path>, laid out byte for byte
        assert (laid / "low" / f"p{i}.jpg").read_bytes() == (clone / "g" / f"{i}_in.jpg").read_bytes()
        assert (src / "owner+pics" / "g" / f"{i}_gt.png").is_file()
    assert len(open_layout("XD-prepare-test", str(root))) == 2

    shutil.copyfile(clone / "g" / "1_gt.png", refs / "2.png")  # the reference now holds a pair's scene
    other = tmp_path / "root2"
    assert prepare(manifest, src, None, other, references=[refs]) == 1
    assert not other.exists()  # refused before anything was laid out

    (src / "owner+pics" / "g" / "0_in.jpg").write_bytes(b"not the same bytes")
    with pytest.raises(UserError, match="0_in.jpg has sha256"):
        prepare(manifest, src, None, root, references=[tmp_path / "lol_high"])
