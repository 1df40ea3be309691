"""Named evaluation datasets: where each test set lives under a data root and how it pairs.

``open_layout("LOLv2", data_root)`` finds the set under the data root, trying each known folder
layout in turn, and returns a paired dataset. The root comes from, in order: the argument
(``--data-root``), the ``SSIR_DATA_ROOT`` environment variable, ``config/datasets.yaml``
(``data_root:`` or a per-dataset path), and the repository's ``datasets/`` folder. A set that is
absent or incomplete raises :class:`DatasetMissing` listing the exact paths expected.

Known sets and the sub-paths tried, in order (relative to the data root):

- low-light (the SSLL paper's five, ``ALL_LOWLIGHT``). Pairs match by name (``auto``: also
  LOLv2's ``low00690`` / ``normal00690``), never silently by position; the option
  ``pairing="sorted"`` (``eval.py --pairing sorted``) restores the official sorted-order pairing:
  ``LOLv2`` (= LOLv2-Real): ``LOLv2/Real_captured/Test/{Low,Normal}`` (original release),
  ``LOLv2/low/teacher`` or ``LOLv2/low`` (recursive) + ``LOLv2/normal`` (official evaluation);
  ``LOLv2-Synthetic``: ``LOLv2/Synthetic/Test/{Low,Normal}``;
  ``SID`` (processed sRGB): ``SID/low/teacher`` or ``SID/low`` + ``SID/normal``;
  ``SDSD``: ``SDSD/low/teacher`` or ``SDSD/low`` + ``SDSD/normal`` (option ``sdsd_official_list``
  keeps the official 52 images);
  ``SMID``: ``SMID/test_list.txt``, ``SMID/high_np/<scene>/*.npy``, ``SMID/low_np/<scene>/<frame>.npy``
  (one fixed frame per scene; option ``smid_green_quirk``, on by default, is the official
  behaviour of dividing the low input's green channel by 1.5);
  ``LSRW-Huawei``: ``LSRW/Huawei/test/{low,high}`` or ``LSRW-Huawei/test/{low,high}``.
- dehazing: ``SOTS-indoor``: ``SOTS/indoor/hazy`` + ``gt`` | ``clear``, ``nyuhaze500/{hazy,gt}``
  (hazy ``{id}_{k}.png`` -> GT ``{id}.png``); ``SOTS-outdoor``: ``SOTS/outdoor/hazy`` + ``gt`` |
  ``clear`` (``{id}_{A}_{beta}.jpg`` -> ``{id}.png``); ``RICE-I``: ``RICE1/cloud`` + ``RICE1/label``,
  ``RICE-I/Hazy`` + ``RICE-I/GT``; ``O-HAZE``, ``I-HAZE``, ``NH-HAZE``, ``Dense-Haze``: ``<set>/hazy``
  (or ``Hazy``) + ``<set>/GT``, or one flat folder of ``NN_..._hazy.*`` / ``NN_..._GT.*`` files.
  Every dehazing set also accepts the ICEML paired-test layout ``<set>/Hazy`` + ``<set>/GT``.
- without ground truth (inputs only, scored with no-reference metrics such as NIQE): ``DICM``,
  ``LIME``, ``NPE``, ``MEF``, ``VV`` (``--dataset no_reference``: the five), a folder of images or
  ``<set>/low``; ``SICE-dark-heldout``: the SICE dark frames of the held-out scenes of
  ``data/splits/sice_dark_scenes.yaml`` (``SICE_dark/``); haze: ``RTTS`` (``RTTS/JPEGImages``),
  ``DAWN-Fog`` (``DAWN/Fog``), ``Fattal``.
- cross-domain sets, one per manifest ``data/cross_domain_<set>.yaml`` (:mod:`data.cross_domain`):
  ``<folder>/{low,high}/<id><ext>``, only the listed pairs, paired by name; built by
  ``scripts/prepare_cross_domain.py``.
- each set names the metric protocol its paper scores it with (``NamedDataset.protocol``, a name of
  ``common_utils/evaluation/protocols.py``): ``iceml`` for RICE-I and SOTS-outdoor, ``paper`` else.
- any folder path holding one of the pairs in ``GENERIC_PAIRS`` (e.g. ``Hazy/`` + ``GT/``, the
  ICEML paired-test layout) can be opened by giving the path instead of a name.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from data import DATASETS
from data.cross_domain import Manifest, manifest_paths, read_manifest
from data.datasets import DatasetMissing, PairedFolderDataset, UnpairedFolderDataset
from data.image_io import has_images
from data.paths import REPO_ROOT, resolve_path
from data.public_datasets import FlatPairedDataset, ListedPairedFolderDataset, SMIDNpyDataset, official_lists
from foundation.errors import UserError
from foundation.registry import Registry

ENV_VAR = "SSIR_DATA_ROOT"
DATASETS_YAML = REPO_ROOT / "config" / "datasets.yaml"


@dataclass(frozen=True)
class Layout:
    """One way a dataset can be stored: low and GT folders relative to the dataset folder.

    ``gt`` is ``None`` for a set without ground truth (inputs only: no-reference scores, e.g. NIQE);
    ``under`` replaces the dataset's folder (relative to the data root) for this layout;
    ``dataset`` names a special dataset type (``flat_paired``) instead of the plain paired folder;
    ``probe`` is a glob the low folder must match (flat folders).
    """

    lq: str
    gt: str | None
    pairing: str = "auto"
    recursive: bool = True
    under: str | None = None
    dataset: str | None = None
    probe: str | None = None


@dataclass
class NamedDataset:
    """A named test set: its folder under the root, its known layouts, or a custom opener, and the
    metric protocol its paper scores it with (a name in common_utils/evaluation/protocols.py)."""

    name: str
    folder: str
    layouts: tuple[Layout, ...] = ()
    opener: Callable[..., Any] | None = None
    task: str = "lowlight"
    protocol: str = "paper"
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    finish: Callable[[Any, dict[str, Any]], Any] | None = None


LAYOUTS = Registry("dataset layout")



def register_layout(ds: NamedDataset, aliases: tuple[str, ...] = ()) -> NamedDataset:
    """Add a named dataset to the registry."""
    LAYOUTS.register(ds.name, aliases=aliases)(ds)
    return ds


def _yaml_settings() -> dict[str, Any]:
    if DATASETS_YAML.is_file():
        try:
            return yaml.safe_load(DATASETS_YAML.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{DATASETS_YAML}: invalid YAML ({exc})") from None
    return {}


def data_root(explicit: str | None = None) -> Path:
    """The data root by precedence: argument, environment, config/datasets.yaml, ./datasets."""
    if explicit:
        return Path(resolve_path(explicit))
    if os.environ.get(ENV_VAR):
        return Path(resolve_path(os.environ[ENV_VAR]))
    settings = _yaml_settings()
    if settings.get("data_root"):
        return Path(resolve_path(settings["data_root"]))
    return REPO_ROOT / "datasets"


def dataset_folder(ds: NamedDataset, root: str | None) -> Path:
    """Folder of a named dataset: a per-dataset path in config/datasets.yaml wins over root/folder."""
    paths = (_yaml_settings().get("paths") or {})
    if not root and ds.name in paths:
        return Path(resolve_path(paths[ds.name]))
    return data_root(root) / ds.folder


def _candidates(ds: NamedDataset, root: str | None) -> list[tuple[Layout, Path]]:
    """Each layout with the folder it is relative to (a per-dataset path in the YAML wins)."""
    paths = (_yaml_settings().get("paths") or {})
    out, seen = [], set()
    for lay in ds.layouts:
        if not root and ds.name in paths:
            base = Path(resolve_path(paths[ds.name]))
        else:
            base = data_root(root) / (lay.under if lay.under is not None else ds.folder)
        key = (base / lay.lq, base / lay.gt if lay.gt is not None else None, lay.dataset)
        if key not in seen:
            seen.add(key)
            out.append((lay, base))
    return out


def _build(lay: Layout, lq: Path, gt: Path | None, dataset_args: dict[str, Any] | None = None) -> Any:
    if gt is None:
        return UnpairedFolderDataset(str(lq), recursive=lay.recursive, **(dataset_args or {}))
    if lay.dataset == "flat_paired":
        return FlatPairedDataset(str(lq))
    return PairedFolderDataset(str(lq), str(gt), pairing=lay.pairing, recursive=lay.recursive, **(dataset_args or {}))


def open_layout(name: str, root: str | None = None, dataset_args: dict[str, Any] | None = None,
                pairing: str | None = None, **options: Any) -> Any:
    """Open the named dataset (see module docstring); a folder path opens a generic pair.

    ``options`` are the dataset options (e.g. ``smid_green_quirk``); those a dataset does not
    have are ignored, so one set of options can be passed to every dataset. ``dataset_args``
    are passed to the paired folder dataset (training: ``crop_size``, ``flip``, ...);
    ``pairing`` overrides how a low/GT folder pair matches its files (``sorted`` = by position).
    """
    if name not in LAYOUTS and Path(name).is_dir():
        return open_folder(name, pairing or "auto")
    ds: NamedDataset = LAYOUTS.get(name)
    opts = {**ds.options, **{k: v for k, v in options.items() if k in ds.options}}
    if ds.opener is not None:
        return ds.opener(dataset_folder(ds, root), **opts)
    tried, partial = [], []
    for lay, base in _candidates(ds, root):
        lq, gt = base / lay.lq, (base / lay.gt if lay.gt is not None else None)
        lq_ok = has_images(lq, lay.recursive, lay.probe)
        gt_ok = lq_ok if lq == gt or gt is None else has_images(gt, lay.recursive)
        if lq_ok and gt_ok:
            if pairing and lay.dataset is None and lay.pairing != "prefix":
                lay = replace(lay, pairing=pairing)
            dataset = _build(lay, lq, gt, dataset_args)
            return ds.finish(dataset, opts) if ds.finish else dataset
        if lq == gt or gt is None:
            tried.append(f"{lq}/{lay.probe or '*'}")
        else:
            tried.append(f"{lq} + {gt}")
            if lq_ok != gt_ok:
                partial.append(f"{lq if lq_ok else gt} has images but {gt if lq_ok else lq} "
                               f"{'is missing' if not (gt if lq_ok else lq).is_dir() else 'has none'}")
    msg = f"{ds.name} not found; expected one of: {' | '.join(tried)}"
    if partial:
        msg += f" (incomplete: {'; '.join(partial)})"
    raise DatasetMissing(msg + (f" ({ds.note})" if ds.note else ""))


# Sub-folder pairs a bare folder may hold (opened by path), tried in order; pairs match by name.
GENERIC_PAIRS = (("Hazy", "GT"), ("hazy", "GT"), ("hazy", "gt"), ("hazy", "clear"), ("low", "high"),
                 ("low", "normal"), ("Low", "Normal"), ("Low", "High"), ("input", "target"), ("lq", "gt"))


def open_folder(path: str, pairing: str = "auto") -> Any:
    """Open a folder holding one of ``GENERIC_PAIRS`` (e.g. the ICEML test layout ``Hazy/`` + ``GT/``)."""
    root = Path(resolve_path(path))
    for lq, gt in GENERIC_PAIRS:
        if has_images(root / lq, True) and has_images(root / gt, True):
            return PairedFolderDataset(str(root / lq), str(root / gt), pairing=pairing, recursive=True)
    raise DatasetMissing(f"{root} holds no known pair of folders; expected one of: "
                         + " | ".join(f"{root / a} + {root / b}" for a, b in GENERIC_PAIRS))


@DATASETS.register("layout")
def open_named_dataset(name: str, data_root: str | None = None, **dataset_args: Any) -> Any:
    """A named layout as a dataset (``type: layout``), e.g. ``{name: LOL-v1-train, crop_size: 128}``.

    The data root follows the same precedence as evaluation (``data_root``, ``SSIR_DATA_ROOT``,
    ``config/datasets.yaml``, ``datasets/``), so one config runs wherever the data lives.

    Args:
        name: a named layout (the table below), e.g. ``LOL-v1-train``, ``LOLv2``, ``SOTS-indoor``.
        data_root: the data root (empty: the precedence above).
        dataset_args: arguments of the ``paired_folder`` dataset it opens (``crop_size``, ``flip``,
            ``repeat``, ``include``, ...).
    """
    return open_layout(name, data_root, dataset_args=dataset_args)


def expand_dataset_names(spec: str | list[str]) -> list[str]:
    """``all`` -> LOL-v1 and the five low-light sets of the SSLL paper (:data:`EVAL_ALL`); ``all_haze``
    -> :data:`PAPER_DEHAZING`; ``A,B`` -> [A, B] with canonical names (folder paths kept)."""
    items = spec if isinstance(spec, list) else [s.strip() for s in str(spec).split(",")]
    out: list[str] = []
    for item in items:
        if not item:
            continue
        if item.lower() == "all":
            out.extend(EVAL_ALL)
        elif item.lower() == "all_haze":
            out.extend(PAPER_DEHAZING)
        elif item.lower() == "no_reference":
            out.extend(NO_REFERENCE_LOWLIGHT)
        elif item not in LAYOUTS and Path(item).is_dir():
            out.append(str(Path(item).resolve()))  # a folder given on the command line: from the cwd
        else:
            try:
                out.append(LAYOUTS.canonical_name(item))
            except UserError as exc:
                raise UserError(f"{exc}; or 'all' ({', '.join(EVAL_ALL)}), 'all_haze' "
                                f"({', '.join(PAPER_DEHAZING)}), or a folder holding e.g. Hazy/ + GT/") from None
    if not out:
        raise UserError("no dataset given")
    return list(dict.fromkeys(out))


def _open_smid(folder: Path, smid_green_quirk: bool = True) -> Any:
    return SMIDNpyDataset(str(folder), green_quirk=smid_green_quirk)


def _sdsd_finish(dataset: Any, options: dict[str, Any]) -> Any:
    """Keep only the official 52 SDSD test images when ``sdsd_official_list`` is set."""
    if not options.get("sdsd_official_list"):
        return dataset
    return ListedPairedFolderDataset(str(dataset.lq_dir), str(dataset.gt_dir), official_lists()["sdsd_test_list"],
                                     pairing=dataset.pairing, recursive=True)


def _official_eval(prefix: str = "") -> tuple[Layout, ...]:
    """The official evaluation's ``low/teacher`` (or recursive ``low``) + ``normal`` folders."""
    return (Layout(f"{prefix}low/teacher", f"{prefix}normal"), Layout(f"{prefix}low", f"{prefix}normal"))


def _haze_layouts(folders: tuple[str, ...], flat: bool = True) -> tuple[Layout, ...]:
    """``hazy``/``Hazy`` + ``GT`` sub-folders (sorted pairing), then a flat folder of *hazy*/*GT* files."""
    lays = []
    for f in folders:
        lays += [Layout("Hazy", "GT", under=f), Layout("hazy", "GT", under=f), Layout("hazy", "gt", under=f)]
    if flat:
        lays += [Layout(".", ".", under=f, dataset="flat_paired", probe="*[hH][aA][zZ][yY]*", recursive=False)
                 for f in folders]
    return tuple(lays)


def _sots(folder: str, extra: tuple[str, ...]) -> tuple[Layout, ...]:
    lays = [Layout("hazy", gt, pairing="prefix", recursive=False, under=folder) for gt in ("gt", "GT", "clear")]
    for f in extra:
        lays += [Layout("hazy", "gt", pairing="prefix", recursive=False, under=f),
                 Layout("Hazy", "GT", pairing="prefix", recursive=False, under=f)]
    return tuple(lays)


ALL_LOWLIGHT = ("LOLv2", "SID", "SDSD", "SMID", "LSRW-Huawei")
#: ``--dataset all``: LOL-v1 (the set the committed weights are scored on) and the paper's five
EVAL_ALL = ("LOL-v1", *ALL_LOWLIGHT)
PAPER_DEHAZING = ("RICE-I", "SOTS-outdoor")
#: ``--dataset no_reference``: the low-light sets without ground truth (scored with NIQE)
NO_REFERENCE_LOWLIGHT = ("DICM", "LIME", "NPE", "MEF", "VV")

register_layout(NamedDataset("LOLv2", "LOLv2", (Layout("Real_captured/Test/Low", "Real_captured/Test/Normal"),)
                             + _official_eval()), aliases=("LOLv2-Real", "LOL-v2", "LOLv2_Real"))
# LOL-v1 as users download it: LOL/our485/{low,high} (training) and LOL/eval15/{low,high} (test);
# LOL's low and high files share names, so pairs match by name
_LOL_DIRS = ("LOL", "LOL-v1", "LOLv1", "LOLdataset")
register_layout(NamedDataset("LOL-v1", "LOL", tuple(Layout("eval15/low", "eval15/high", pairing="name", under=d)
                                                     for d in _LOL_DIRS),
                             note="the 15 LOL-v1 test pairs (LOL/eval15/{low,high})"),
                aliases=("LOL", "LOLv1", "LOL-v1-eval15", "eval15"))
register_layout(NamedDataset("LOL-v1-train", "LOL", tuple(Layout("our485/low", "our485/high", pairing="name", under=d)
                                                           for d in _LOL_DIRS),
                             note="the LOL-v1 training pairs (LOL/our485/{low,high}); a training set"),
                aliases=("LOL-v1-our485", "our485", "LOLv1-train"))
register_layout(NamedDataset("LOLv2-Synthetic", "LOLv2", (Layout("Synthetic/Test/Low", "Synthetic/Test/Normal"),)),
                aliases=("LOLv2-Syn", "LOLv2_Synthetic"))
register_layout(NamedDataset("SID", "SID", _official_eval(), note="the processed sRGB SID set of the official "
                             "evaluation"))
register_layout(NamedDataset("SDSD", "SDSD", _official_eval(), options={"sdsd_official_list": False},
                             finish=_sdsd_finish))
register_layout(NamedDataset("SMID", "SMID", opener=_open_smid, options={"smid_green_quirk": True},
                             note="SMID in the .npy layout"))
register_layout(NamedDataset("LSRW-Huawei", "LSRW-Huawei",
                             (Layout("test/low", "test/high", under="LSRW/Huawei"), Layout("test/low", "test/high"))),
                aliases=("LSRW", "Huawei"))
register_layout(NamedDataset("SOTS-indoor", "SOTS-indoor", _sots("SOTS/indoor", ("nyuhaze500", "SOTS-indoor")),
                             task="haze"))
# the ICEML paper's two test sets, scored as its evaluation does (resized to 1024x1024, piq SSIM)
register_layout(NamedDataset("SOTS-outdoor", "SOTS-outdoor", _sots("SOTS/outdoor", ("SOTS-outdoor",)), task="haze",
                             protocol="iceml"), aliases=("SOTS-Outdoors",))
register_layout(NamedDataset("RICE-I", "RICE-I", (Layout("cloud", "label", under="RICE1"),
                                                  Layout("Hazy", "GT", under="RICE1"),
                                                  Layout("Hazy", "GT"), Layout("cloud", "label")), task="haze",
                             protocol="iceml"), aliases=("RICE1", "RICE"))
register_layout(NamedDataset("O-HAZE", "O-HAZE", _haze_layouts(("O-HAZE", "O-Haze")), task="haze"))
register_layout(NamedDataset("I-HAZE", "I-HAZE", _haze_layouts(("I-HAZE", "I-Haze")), task="haze"))
register_layout(NamedDataset("NH-HAZE", "NH-HAZE", _haze_layouts(("NH-HAZE", "NH-Haze")), task="haze"))
register_layout(NamedDataset("Dense-Haze", "Dense-Haze", _haze_layouts(("Dense-Haze", "Dense-HAZE")), task="haze"),
                aliases=("DenseHaze",))
# real photographs without ground truth (the papers' qualitative sets): inputs only, scored with NIQE
register_layout(NamedDataset("DICM", "DICM", (Layout(".", None), Layout("low", None)), note="DICM: a folder of images"))
register_layout(NamedDataset("LIME", "LIME", (Layout(".", None), Layout("low", None)), note="LIME: a folder of images"))
register_layout(NamedDataset("NPE", "NPE", (Layout(".", None), Layout("low", None)), note="NPE: a folder of images"))
register_layout(NamedDataset("MEF", "MEF", (Layout(".", None), Layout("low", None)), note="MEF: a folder of images"))
register_layout(NamedDataset("VV", "VV", (Layout(".", None), Layout("low", None)), note="VV: a folder of images"))
# the SICE dark frames of the held-out scenes of data/splits/sice_dark_scenes.yaml (the pool scenes are training data)
SICE_SPLIT = REPO_ROOT / "data" / "splits" / "sice_dark_scenes.yaml"
register_layout(NamedDataset("SICE-dark-heldout", "SICE_dark", (Layout(".", None, recursive=False),),
                             finish=lambda dataset, _options: UnpairedFolderDataset(
                                 str(dataset.roots[0]), split_file=str(SICE_SPLIT), split_subset="heldout"),
                             note=f"SICE_dark: the dark frames; only the held-out scenes of {SICE_SPLIT.name} are "
                                  "scored"), aliases=("SICE-heldout",))
register_layout(NamedDataset("RTTS", "RTTS", (Layout("JPEGImages", None), Layout(".", None)), task="haze",
                             note="RTTS: RTTS/JPEGImages"))
register_layout(NamedDataset("DAWN-Fog", "DAWN", (Layout("Fog", None), Layout(".", None)), task="haze",
                             note="DAWN's Fog photographs: DAWN/Fog"), aliases=("DAWN",))
register_layout(NamedDataset("Fattal", "Fattal", (Layout(".", None),), task="haze",
                             note="Fattal's classic hazy photographs: a folder of images"))

register_layout(NamedDataset("demo_lowlight", str(REPO_ROOT / "demo_data" / "lowlight"),
                             (Layout("test/low", "test/high", pairing="name", recursive=False),),
                             note="run scripts/make_demo_data.py to create it"), aliases=("demo",))
register_layout(NamedDataset("demo_haze", str(REPO_ROOT / "demo_data" / "haze"),
                             (Layout("test/hazy", "test/clear", pairing="name", recursive=False),),
                             task="haze", note="run scripts/make_demo_data.py --kind haze to create it"))


def register_manifest(path: str | Path) -> NamedDataset:
    """Register the cross-domain set of the manifest ``path`` (see :mod:`data.cross_domain`)."""
    manifest = read_manifest(path)
    return register_layout(NamedDataset(
        manifest.name, manifest.folder, (Layout("low", "high", pairing="name", recursive=False),),
        note=f"{len(manifest.pairs)} pairs listed in {manifest.path}; lay them out with "
             f"python scripts/prepare_cross_domain.py --manifest {manifest.path}",
        finish=lambda dataset, _options: _listed_pairs(dataset, manifest)))


def _listed_pairs(dataset: PairedFolderDataset, manifest: Manifest) -> ListedPairedFolderDataset:
    """Only the manifest's pairs; one that is not on disk is an error naming it."""
    return ListedPairedFolderDataset(str(dataset.lq_dir), str(dataset.gt_dir),
                                     [p.file_name("low") for p in manifest.pairs], pairing="name", recursive=False)


for _path in manifest_paths():
    register_manifest(_path)
