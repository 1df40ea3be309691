"""Reference pages generated from the code: the config keys (:mod:`core.schema`) and the dataset
types and named layouts (:mod:`data`, :mod:`data.layouts`).

``scripts/config_reference.py`` writes them: ``docs/config_reference.md`` whole, and the blocks
between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` of ``docs/datasets.md`` (the rest
of that page is written by hand). ``tests/core/test_config_reference.py`` fails when a committed page
differs from what the code gives, so the pages cannot drift from the schema and the registries.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core import TRAINERS as _TRAINER_REGISTRY
from core.schema import BASE_SCHEMA, FREE, KEY_DOCS, KEY_READ_BY, TRAINER_SECTIONS, Field, ListOf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_REFERENCE = REPO_ROOT / "docs" / "config_reference.md"
DATASETS_PAGE = REPO_ROOT / "docs" / "datasets.md"
#: every trainer, in the order the pages name them
TRAINERS = tuple(_TRAINER_REGISTRY.names())


# ----------------------------------------------------------------------------------------------- config keys
def schema_keys(schema: Mapping[str, Any] = BASE_SCHEMA, prefix: str = "") -> list[tuple[str, Any]]:
    """Every documented key of the schema as ``(dotted key, spec)``, in schema order; list items as ``key[].sub``."""
    out: list[tuple[str, Any]] = []
    for key, spec in schema.items():
        path = f"{prefix}{key}"
        if isinstance(spec, Mapping):
            out += schema_keys(spec, f"{path}.")
        elif isinstance(spec, ListOf):
            out.append((path, spec))
            out += schema_keys(spec.schema, f"{path}[].")
        else:
            out.append((path, spec))
    return out


def read_by(key: str) -> tuple[str, ...]:
    """The trainers that read ``key``: its own entry or its nearest section's in :data:`KEY_READ_BY`,
    else the owner of its top-level section (:data:`TRAINER_SECTIONS`), else every trainer."""
    parts = key.replace("[]", "").split(".")
    for n in range(len(parts), 0, -1):
        hit = KEY_READ_BY.get(".".join(parts[:n]))
        if hit:
            return hit
    owner = TRAINER_SECTIONS.get(parts[0])
    return (owner,) if owner else TRAINERS


def _yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = f"{v:g}"
        return text if any(c in text for c in ".en") else text + ".0"  # 1.0 stays a float
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _type_of(spec: Any) -> str:
    if spec is FREE:
        return "mapping"
    if isinstance(spec, ListOf):
        return "list" + (f" (an item may be just its `{spec.shorthand}`)" if spec.shorthand else "")
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}
    types = ["number"] + [t for t in spec.types if t not in (int, float)] if {int, float} <= set(spec.types) \
        else list(spec.types)
    text = " or ".join(t if isinstance(t, str) else names.get(t, t.__name__) for t in types)
    return text + (" or null" if spec.optional and spec.default is not None else "")


def _default_of(spec: Any) -> str:
    if spec is FREE:
        return "`{}`"
    if isinstance(spec, ListOf):
        return "`[" + ", ".join(_yaml_value(d) for d in spec.default) + "]`" if spec.default else "`[]`"
    if spec.required:
        return "required"
    return f"`{_yaml_value(spec.default)}`"


def _allowed_of(spec: Any) -> str:
    if not isinstance(spec, Field):
        return ""
    if spec.choices:
        return ", ".join(f"`{_yaml_value(c)}`" for c in spec.choices)
    num = lambda x: str(int(x)) if float(x).is_integer() else f"{x:g}"
    bounds = []
    if spec.minimum is not None:
        bounds.append(f">= {num(spec.minimum)}")
    if spec.above is not None:
        bounds.append(f"> {num(spec.above)}")
    if spec.maximum is not None:
        bounds.append(f"<= {num(spec.maximum)}")
    return ", ".join(bounds)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_reference() -> str:
    """``docs/config_reference.md``: every config key with its type, default, allowed values, the
    trainers that read it and one line of meaning."""
    keys = schema_keys()
    lines = ["# Config reference", "",
             "Generated from `core/schema.py` by `python scripts/config_reference.py`; do not edit by hand "
             "(`tests/core/test_config_reference.py` fails when this page and the schema disagree).", "",
             "Every key a config file or a dotted override (`python run.py -c CFG train.iters=20`) may set. "
             "A key that is not listed is an error naming the closest valid one; a value of the wrong type "
             "or out of range names its key. `null` (or leaving the key out) means the default. "
             "`args` mappings are checked against the constructor of the network, dataset type "
             "([docs/datasets.md](datasets.md)) or loss they belong to.", "",
             "*Read by* names the trainers (`trainer:`) that use a key: a section of another trainer "
             "(`ssll` in a supervised run, `iceml` in an SSLL run) is an error, and so is `losses` for ICEML, "
             "whose losses are the `iceml.w_*` weights.", ""]
    sections: dict[str, list[tuple[str, Any]]] = {}
    for key, spec in keys:
        top = key.split(".")[0].split("[")[0]
        own = isinstance(BASE_SCHEMA[top], (Mapping, ListOf))
        sections.setdefault(top if own else "top level", []).append((key, spec))
    for title, rows in sections.items():
        lines += [f"## {'Top-level keys' if title == 'top level' else '`' + title + '`'}", "",
                  "| key | type | default | allowed | read by | meaning |", "|---|---|---|---|---|---|"]
        for key, spec in rows:
            who = read_by(key)
            who_text = "all" if who == TRAINERS else ", ".join(who)
            lines.append(f"| `{key}` | {_cell(_type_of(spec))} | {_cell(_default_of(spec))} | "
                         f"{_cell(_allowed_of(spec))} | {who_text} | {_cell(KEY_DOCS.get(key, ''))} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def undocumented_keys() -> tuple[list[str], list[str]]:
    """Schema keys without a line in :data:`KEY_DOCS`, and lines in it for keys the schema no longer has."""
    keys = [k for k, _ in schema_keys()]
    return [k for k in keys if not KEY_DOCS.get(k)], sorted(set(KEY_DOCS) - set(keys))


# ----------------------------------------------------------------------------------------------- dataset types
_ARGS_RE = re.compile(r"^(\s*)Args:\s*$")


def docstring_args(doc: str | None) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring as ``{name: text}`` (``a, b: text`` gives both)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, str] = {}
    start = next((i for i, ln in enumerate(lines) if _ARGS_RE.match(ln)), None)
    if start is None:
        return out
    base = len(_ARGS_RE.match(lines[start]).group(1))
    item_indent = None
    current: list[str] = []
    text: list[str] = []

    def flush() -> None:
        for name in current:
            out[name] = " ".join(text).strip()

    for ln in lines[start + 1:]:
        if not ln.strip():
            break
        indent = len(ln) - len(ln.lstrip())
        if indent <= base:
            break
        item_indent = indent if item_indent is None else item_indent
        m = re.match(r"^([\w*]+(?:\s*,\s*[\w*]+)*):\s*(.*)$", ln.strip())
        if indent == item_indent and m:
            flush()
            current = [n.strip().lstrip("*") for n in m.group(1).split(",")]
            text = [m.group(2)]
        else:
            text.append(ln.strip())
    flush()
    return out


def _rst_to_md(text: str) -> str:
    """reST markup as Markdown; a dataset class is named by its ``type`` (``PairedFolderDataset`` ->
    ``paired_folder``)."""
    from data import DATASETS, list_datasets

    text = re.sub(r":(?:func|class|data|meth|mod|attr):`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    types = {DATASETS.get(n).__name__: n for n in list_datasets()}
    return re.sub(r"`(?:[\w.]+\.)?(\w+)`", lambda m: f"`{types.get(m.group(1), m.group(0)[1:-1])}`", text)


def dataset_arguments(ctor: Any) -> list[tuple[str, str, str]]:
    """``(name, default, meaning)`` for every constructor argument of a dataset type."""
    params = [p for n, p in inspect.signature(ctor).parameters.items() if n != "self"]
    docs = docstring_args(ctor.__doc__)
    rows = []
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            name, default = f"**{p.name}", ""
        else:
            name = p.name
            default = "required" if p.default is inspect.Parameter.empty else f"`{_yaml_value(p.default)}`"
        rows.append((name, default, _rst_to_md(docs.get(p.name, ""))))
    return rows


def dataset_types_reference() -> str:
    """The generated block ``dataset-types`` of docs/datasets.md: each registered type and its arguments."""
    from data import DATASETS, list_datasets

    lines: list[str] = []
    for name in list_datasets():
        ctor = DATASETS.get(name)
        summary = _rst_to_md(inspect.cleandoc(ctor.__doc__ or "").split("\n\n", 1)[0].replace("\n", " "))
        lines += [f"### `{name}`", "", summary, "", "| argument | default | meaning |", "|---|---|---|"]
        lines += [f"| `{a}` | {_cell(d)} | {_cell(m)} |" for a, d, m in dataset_arguments(ctor)]
        lines.append("")
    return "\n".join(lines).rstrip()


def layouts_reference() -> str:
    """The generated block ``layouts`` of docs/datasets.md: each named set, its aliases and the folders tried."""
    from data.layouts import LAYOUTS

    lines = ["| name | aliases | task | folders tried under the data root, in order | pairing |",
             "|---|---|---|---|---|"]
    for name in LAYOUTS.names():
        ds = LAYOUTS.get(name)
        aliases = ", ".join(f"`{a}`" for a in LAYOUTS.aliases(name))
        if ds.opener is not None:
            tried = f"`{ds.folder}/` ({ds.note})" if ds.note else f"`{ds.folder}/`"
            pairing = "its own"
        else:
            tried_items, pairings = [], []
            for lay in ds.layouts:
                base = lay.under if lay.under is not None else ds.folder
                base = "<repo>/" + Path(base).relative_to(REPO_ROOT).as_posix() if Path(base).is_absolute() else base
                if lay.dataset == "flat_paired":
                    tried_items.append(f"`{base}/{lay.probe}` (one folder)")
                elif lay.gt is None:  # inputs only: scored without a reference
                    tried_items.append(f"`{(Path(base) / lay.lq).as_posix()}/` (inputs only)")
                else:
                    tried_items.append(f"`{base}/{{{lay.lq},{lay.gt}}}`")
                pairings.append("flat" if lay.dataset else "none (NIQE)" if lay.gt is None else lay.pairing)
            tried = " \\| ".join(tried_items)
            pairing = ", ".join(dict.fromkeys(pairings))
        lines.append(f"| `{name}` | {aliases} | {ds.task} | {tried} | {pairing} |")
    return "\n".join(lines)


GENERATED_BLOCKS = {"dataset-types": dataset_types_reference, "layouts": layouts_reference}


def fill_generated_blocks(text: str) -> str:
    """``text`` with every ``<!-- generated: NAME -->`` ... ``<!-- end: NAME -->`` block rebuilt."""
    for name, render in GENERATED_BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"the page has no block '<!-- generated: {name} -->' ... '<!-- end: {name} -->'")
        block = render()
        text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    return text


def generated_pages() -> dict[Path, str]:
    """Each generated page and the text it must hold."""
    return {CONFIG_REFERENCE: config_reference(),
            DATASETS_PAGE: fill_generated_blocks(DATASETS_PAGE.read_text(encoding="utf-8"))}
