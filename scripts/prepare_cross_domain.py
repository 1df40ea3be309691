"""Lay out a cross-domain test set from its manifest, checking every file's sha256 and the set's overlap with LOL-v1.

    python scripts/prepare_cross_domain.py --manifest data/cross_domain_samples.yaml --src DIR
        [--mirrors DIR] [--data-root DIR] [--link] [--force] [--overlap-with DIR ...]

The manifest (:mod:`data.cross_domain`) lists each image's public repository, commit and path.
``--src`` holds the extracted files as ``<src>/<owner>+<name>/<path>``; a file that is not there
is extracted with ``git show <commit>:<path>`` from a bare clone ``<mirrors>/<owner>+<name>/repo``
(or ``<mirrors>/<owner>+<name>``) when ``--mirrors`` is given. Each file must have the manifest's
sha256. It is then copied unchanged (``--link``: symbolically linked) to
``<data root>/<folder>/{low,high}/<id><ext>``, the layout the named set reads
(``eval.py --dataset <name>``). The data root follows the evaluation's precedence (``--data-root``,
``SSIR_DATA_ROOT``, ``config/datasets.yaml``, ``datasets/``).

Overlap check: every ground truth is compared with every image of the reference folders
(``--overlap-with``; default: LOL-v1's ``LOL/eval15/high`` and ``LOL/our485/high`` under the data
root) by the scene rule of :mod:`data.scene_match`; the closest match of each pair is printed,
and a pair that shows a reference scene stops the script (exit code 1) before anything is laid out.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common_utils.cli import run_cli  # noqa: E402
from data.cross_domain import SIDES, Manifest, SourceFile, read_manifest  # noqa: E402
from data.image_io import list_images  # noqa: E402
from data.layouts import LAYOUTS, data_root, open_layout, register_manifest  # noqa: E402
from data.scene_match import linked, similarity, thumbnail  # noqa: E402
from foundation.errors import UserError  # noqa: E402

LOL_V1_HIGH = ("LOL/eval15/high", "LOL/our485/high")


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def repo_dir(repo: str) -> str:
    """``owner/name`` -> ``owner+name``: the folder of a repository under --src and --mirrors."""
    return repo.replace("/", "+")


def extract(src: SourceFile, dest: Path, mirrors: Path) -> None:
    """Write ``src``'s bytes at its commit to ``dest`` from a git clone under ``mirrors``."""
    base = mirrors / repo_dir(src.repo)
    git_dir = next((d for d in (base / "repo", base, base / ".git") if (d / "HEAD").is_file()), None)
    if git_dir is None:
        raise UserError(f"no git clone of {src.repo} under {mirrors} (looked for {base}/repo, {base})")
    out = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{src.commit}:{src.path}"],
                         capture_output=True, check=False)
    if out.returncode != 0:
        raise UserError(f"{git_dir}: cannot read {src.commit}:{src.path} ({out.stderr.decode().strip()})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(out.stdout)


def source_path(src: SourceFile, src_root: Path, mirrors: Path | None) -> Path:
    """The checked local copy of ``src`` (extracted first when needed and possible)."""
    path = src_root / repo_dir(src.repo) / src.path
    if not path.is_file():
        if mirrors is None:
            raise UserError(f"{path} not found: extract {src.repo}@{src.commit}:{src.path} there, or give "
                            f"--mirrors with a clone of {src.repo}")
        extract(src, path, mirrors)
    got = sha256_of(path)
    if got != src.sha256:
        raise UserError(f"{path} has sha256 {got}, but the manifest expects {src.sha256} "
                        f"({src.repo}@{src.commit}:{src.path})")
    return path


def check_overlap(manifest: Manifest, files: dict[str, dict[str, Path]], references: list[Path]) -> list[str]:
    """Print each ground truth's closest reference image; return the ids that show a reference scene."""
    refs = [(f, thumbnail(f)) for folder in references for f in list_images(folder)]
    print(f"overlap check: {len(manifest.pairs)} ground truths against {len(refs)} images of "
          f"{', '.join(str(r) for r in references)}")
    shared = []
    for pair in manifest.pairs:
        t = thumbnail(files[pair.id]["high"])
        scores = [(similarity(t, ref), f) for f, ref in refs]
        (grey, _), grey_file = max(scores, key=lambda s: s[0][0])
        (_, grad), grad_file = max(scores, key=lambda s: s[0][1])
        hit = any(linked(*score) for score, _ in scores)
        print(f"  {pair.id}: max grey {grey:.3f} ({grey_file.name}), max gradient {grad:.3f} ({grad_file.name})"
              + ("  SAME SCENE" if hit else ""))
        if hit:
            shared.append(pair.id)
    return shared


def place(path: Path, dest: Path, link: bool, force: bool) -> None:
    """Copy (or link) ``path`` to ``dest``; an existing different file needs ``force``."""
    if dest.is_file() and not dest.is_symlink() and sha256_of(dest) == sha256_of(path) and not link:
        return
    if dest.is_symlink() and dest.resolve() == path.resolve() and link:
        return
    if dest.exists() or dest.is_symlink():
        if not force:
            raise UserError(f"{dest} already exists with other contents; move it away or pass --force")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        os.symlink(path.resolve(), dest)
    else:
        shutil.copyfile(path, dest)


def prepare(manifest_path: Path, src_root: Path, mirrors: Path | None, root: Path, link: bool = False,
            force: bool = False, references: list[Path] | None = None) -> int:
    """Check, overlap-check and lay out the set of ``manifest_path`` under ``root``; return the exit code."""
    manifest = read_manifest(manifest_path)
    files = {p.id: {side: source_path(getattr(p, side), src_root, mirrors) for side in SIDES} for p in manifest.pairs}
    print(f"{manifest.name}: {len(manifest.pairs)} pairs, every sha256 as in {manifest.path}")
    if references is None:
        references = [root / r for r in LOL_V1_HIGH if (root / r).is_dir()]
        if not references:
            raise UserError(f"no LOL-v1 ground truths under {root} ({', '.join(LOL_V1_HIGH)}) to check the overlap "
                            f"against; give --overlap-with DIR")
    shared = check_overlap(manifest, files, references)
    if shared:
        print(f"error: {len(shared)} pairs show a scene of the reference folders: {', '.join(shared)}; remove them "
              f"from {manifest.path}", file=sys.stderr)
        return 1
    for pair in manifest.pairs:
        for side in SIDES:
            place(files[pair.id][side], root / manifest.folder / side / pair.file_name(side), link, force)
    if manifest.name not in LAYOUTS:  # a manifest outside data/ (eval.py knows only those in data/)
        register_manifest(manifest.path)
    dataset = open_layout(manifest.name, str(root))
    sizes = sorted({tuple(dataset[i]["gt"].shape[1:]) for i in range(len(dataset))})
    print(f"{root / manifest.folder}: {len(dataset)} pairs read back as '{manifest.name}' "
          f"(sizes HxW: {', '.join(f'{h}x{w}' for h, w in sizes)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="data/cross_domain_<set>.yaml")
    parser.add_argument("--src", required=True, help="folder of the extracted files, <src>/<owner>+<name>/<path>")
    parser.add_argument("--mirrors", help="folder of git clones <owner>+<name>[/repo] to extract missing files from")
    parser.add_argument("--data-root", help="data root to lay the set out under (default: as the evaluation)")
    parser.add_argument("--link", action="store_true", help="symbolic links instead of copies")
    parser.add_argument("--force", action="store_true", help="replace laid-out files that differ")
    parser.add_argument("--overlap-with", action="append", help="reference folder(s) of ground truths "
                        "(default: LOL/eval15/high and LOL/our485/high under the data root)")
    args = parser.parse_args(argv)

    def job() -> int:
        root = data_root(args.data_root)
        refs = [Path(r).expanduser() for r in args.overlap_with] if args.overlap_with else None
        return prepare(Path(args.manifest), Path(args.src).expanduser(),
                       Path(args.mirrors).expanduser() if args.mirrors else None, root, args.link, args.force, refs)

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
