"""YAML configs: ``_base_`` inheritance, dotted command-line overrides, validation on load.

- ``_base_: other.yaml`` (or a list) is merged first, paths relative to the including file;
  mappings merge key by key (one that names another ``type`` replaces the mapping whole),
  everything else is replaced.
- Overrides ``a.b.c=value`` are parsed as YAML scalars (never evaluated as code).
- Every key is checked against :mod:`core.schema`: an unknown or misspelt key is an error naming
  the closest valid key; a value of the wrong type names the key and the expected type.
  Numbers written like ``2e-4`` (a string for PyYAML) are accepted where a float is expected.
- Network and dataset arguments are checked against their constructors' signatures.

The result is an immutable :class:`Config` (attribute or item access).
"""
from __future__ import annotations

import copy
import inspect
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from core.schema import FREE, Field, ListOf, schema_for
from foundation.errors import UserError, closest_match


class ConfigError(UserError):
    """A config file or override that is not valid."""


class Config(Mapping):
    """Read-only nested mapping with attribute access."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", {k: _freeze(v) for k, v in data.items()})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        if key == "_data":  # not yet set (copy/pickle build the object without __init__)
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError("Config is read-only; pass overrides to load_config instead")

    def to_dict(self) -> dict[str, Any]:
        """A deep, mutable copy as plain dicts and lists."""
        return _thaw(self)

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"


def _freeze(v: Any) -> Any:
    if isinstance(v, Mapping) and not isinstance(v, Config):
        return Config(v)
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last one)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key == "<<":  # a YAML merge key may repeat
            continue
        try:
            hash(key)
        except TypeError:
            continue  # the default constructor reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is written twice (lines {seen[key] + 1} and "
                            f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml_text(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (a config's silent "last one wins")."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.yaml"))[:4]
        hint = f" such as {', '.join(str(path / n) for n in found)}" if found else ""
        raise ConfigError(f"-c {path} is a folder; give a config file (.yaml){hint}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = read_yaml_text(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``over`` (mappings recursively, other values replaced).

    A mapping that names another ``type`` than the one it overrides (a dataset, loss or optimizer
    of another kind) replaces it whole: the arguments of one type mean nothing to another.
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        other_type = (isinstance(v, Mapping) and isinstance(out.get(k), dict) and "type" in v
                      and "type" in out[k] and v["type"] != out[k]["type"])
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and not other_type:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML file and merge its ``_base_`` chain (without validation)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: _base_ inheritance loops back to itself")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged: dict[str, Any] = {}
    for b in bases:
        merged = deep_merge(merged, load_yaml_with_bases(path.parent / b, _seen + (path,)))
    return deep_merge(merged, data)


_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars/lists, never executed)."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not _KEY_RE.match(key):
            raise ConfigError(f"override key '{key}' is not a dotted key name")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _coerce(key: str, value: Any, field: Field, source: str) -> Any:
    if value is None:
        if field.optional:
            return None
        raise ConfigError(f"config key '{key}' must not be empty (expected {_type_name(field.types)}){source}")
    if float in field.types and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if float in field.types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if int not in field.types else value
    if isinstance(value, bool) and bool not in field.types and str in field.types and field.choices:
        # YAML 1.1 reads off/on/no/yes as booleans; map them back when the key takes such words
        for word in (("off", "no", "false") if not value else ("on", "yes", "true")):
            if word in field.choices:
                value = word
                break
    if isinstance(value, bool) and bool not in field.types:
        raise ConfigError(f"config key '{key}' must be {_type_name(field.types)}, got bool {value}{source}")
    if list in field.types and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, field.types):
        raise ConfigError(f"config key '{key}' must be {_type_name(field.types)}, got "
                          f"{type(value).__name__} {value!r}{source}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}' must be a finite number, got {value}{source}")
    if field.minimum is not None and isinstance(value, (int, float)) and value < field.minimum:
        raise ConfigError(f"config key '{key}' must be at least {field.minimum:g}, got {value}{source}")
    if field.maximum is not None and isinstance(value, (int, float)) and value > field.maximum:
        top = int(field.maximum) if float(field.maximum).is_integer() else field.maximum
        raise ConfigError(f"config key '{key}' must be at most {top}, got {value}{source}")
    if field.above is not None and isinstance(value, (int, float)) and value <= field.above:
        raise ConfigError(f"config key '{key}' must be greater than {field.above:g}, got {value}{source}")
    if field.choices and value not in field.choices:
        hint = closest_match(str(value), [str(c) for c in field.choices])
        raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, field.choices))}, got "
                          f"{value!r}{' (did you mean ' + repr(hint) + '?)' if hint else ''}{source}")
    return value


def _leaf_paths(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, spec in schema.items():
        if isinstance(spec, Mapping):
            out += _leaf_paths(spec, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _unknown_key_hint(key: str, prefix: str, schema: Mapping[str, Any], root: Mapping[str, Any]) -> str | None:
    """The closest key in the same section, else a key of that name elsewhere (``train.lr`` -> ``optim.lr``)."""
    hint = closest_match(key, list(schema))
    if hint:
        return f"{prefix}{hint}"
    elsewhere = [p for p in _leaf_paths(root) if p.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return elsewhere[0]
    return closest_match(key, _leaf_paths(root))


def validate(data: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "", source: str = "",
             root: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check ``data`` against ``schema`` and fill defaults; return a new dict."""
    root = schema if root is None else root
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in schema:
            hint = _unknown_key_hint(key, prefix, schema, root)
            raise ConfigError(f"unknown config key '{full}'" + (f" (did you mean '{hint}'?)" if hint else "")
                              + source)
        spec = schema[key]
        if spec is FREE:
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"config key '{full}' must be a mapping{source}")
            out[key] = dict(value or {})
        elif isinstance(spec, Field):
            out[key] = _coerce(full, value, spec, source)
        elif isinstance(spec, ListOf):
            if value is None:
                out[key] = []
                continue
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"config key '{full}' must be a list{source}")
            out[key] = [validate(_as_mapping(v, f"{full}[{i}]", spec.shorthand, source), spec.schema,
                                 f"{full}[{i}].", source, root) for i, v in enumerate(value)]
        else:  # nested section
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{full}' must be a mapping of keys{source}")
            out[key] = validate(value, spec, f"{full}.", source, root)
    for key, spec in schema.items():
        if key in out:
            continue
        if isinstance(spec, Field):
            if spec.required:
                raise ConfigError(f"config key '{prefix}{key}' is required{source}")
            out[key] = copy.deepcopy(spec.default)
        elif spec is FREE:
            out[key] = {}
        elif isinstance(spec, ListOf):
            out[key] = [validate(dict(item), spec.schema, f"{prefix}{key}[{i}].", source, root)
                        for i, item in enumerate(spec.default)]
        else:
            out[key] = validate({}, spec, f"{prefix}{key}.", source, root)
    return out


def _as_mapping(v: Any, where: str, shorthand: str | None, source: str) -> Mapping[str, Any]:
    if isinstance(v, Mapping):
        return v
    if shorthand and isinstance(v, str):
        return {shorthand: v}
    raise ConfigError(f"config key '{where}' must be a mapping{source}")


def check_constructor_args(kind: str, name: str, ctor: Any, args: Mapping[str, Any], key: str, source: str) -> None:
    """Unknown constructor arguments are config errors naming the closest valid one."""
    try:
        params = inspect.signature(ctor).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for arg in args:
        if arg not in valid:
            hint = closest_match(arg, valid)
            raise ConfigError(f"unknown argument '{key}.{arg}' for {kind} '{name}'"
                              + (f" (did you mean '{key}.{hint}'?)" if hint else "")
                              + f"; valid: {', '.join(valid)}{source}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load, merge, override and validate a config; see the module docstring."""
    path = Path(path)
    raw = load_yaml_with_bases(path)
    raw = apply_overrides(raw, list(overrides or []))
    source = f" (in {path})"
    trainer = raw.get("trainer", "supervised")
    _check_trainer_sections(raw, trainer, source)
    schema = schema_for(trainer)
    data = validate(raw, schema, source=source)
    _check_components(data, source)
    _check_cross_keys(data, source)
    data["_source"] = str(path)
    return Config(data)


def _check_trainer_sections(raw: Mapping[str, Any], trainer: Any, source: str) -> None:
    """A section of another trainer, or a key the trainer would ignore, is an error that says why."""
    from core import TRAINERS
    from core.schema import TRAINER_SECTIONS

    if not isinstance(trainer, str) or trainer not in TRAINERS:
        hint = closest_match(str(trainer), TRAINERS.names())
        raise ConfigError(f"config key 'trainer' must be one of {', '.join(TRAINERS.names())}, got {trainer!r}"
                          + (f" (did you mean '{hint}'?)" if hint else "") + source)
    for section, owner in TRAINER_SECTIONS.items():
        if raw.get(section) and owner != trainer:
            raise ConfigError(f"config section '{section}' is read by the {owner} trainer, but this config runs "
                              f"the {trainer} trainer, which would ignore it; remove it or set trainer: {owner}"
                              + source)
    if trainer == "iceml" and raw.get("losses"):
        raise ConfigError("config key 'losses' is ignored by the iceml trainer, whose losses are set by the "
                          "iceml.w_* weights; remove it" + source)


def _check_cross_keys(data: Mapping[str, Any], source: str) -> None:
    """Rules between keys: what one key needs from another."""
    from common_utils.device import check_device_name

    try:
        data["device"] = check_device_name(data["device"], "config key 'device'")
    except UserError as exc:
        raise ConfigError(f"{exc}{source}") from None
    threads = data["train"]["threads"]
    if isinstance(threads, str) and threads != "auto" or isinstance(threads, int) and threads < 1:
        raise ConfigError(f"config key 'train.threads' must be auto or a positive number, got {threads!r}" + source)
    from core.tracking import check_tracking_config

    problem = check_tracking_config(data["logging"])
    if problem:
        raise ConfigError(problem + source)
    v = data["validation"]
    if v["watch"] == "lpips" and not v["lpips"]:
        raise ConfigError("validation.watch is lpips but validation.lpips is false: no LPIPS score would be "
                          "watched, and no best checkpoint kept; set validation.lpips: true or watch psnr" + source)


def _check_components(data: dict[str, Any], source: str) -> None:
    from data import DATASETS
    from models import NETWORKS

    net = data["network"]
    ctor = NETWORKS.get(net["name"])
    check_constructor_args("network", net["name"], ctor, net["args"], "network.args", source)
    if data["train"]["grad_checkpoint"]:
        from models.grad_checkpoint import grad_checkpoint_problem

        problem = grad_checkpoint_problem(ctor)
        if problem:
            raise ConfigError(problem + source)
    for section in ("paired", "unpaired", "val"):
        spec = data["data"].get(section)
        if spec and spec.get("type"):
            ctor = DATASETS.get(spec["type"])
            check_constructor_args("dataset", spec["type"], ctor, spec["args"], f"data.{section}.args", source)
    from losses import LOSSES
    from losses.semi import UnpairedLoss, unpaired_loss_names

    specs_by_key = {"losses": data["losses"]}
    if "ssll" in data:
        specs_by_key["ssll.unpaired_losses"] = data["ssll"]["unpaired_losses"]
    for where, specs in specs_by_key.items():
        for i, spec in enumerate(specs):
            ctor = LOSSES.get(spec["name"])
            if where == "ssll.unpaired_losses" and not issubclass(ctor, UnpairedLoss):
                raise ConfigError(f"config key '{where}[{i}]': '{spec['name']}' is not an unpaired loss (called as "
                                  "loss(student_out, teacher_out, input, mask)); use one of "
                                  f"{', '.join(unpaired_loss_names())}" + source)
            check_constructor_args("loss", spec["name"], ctor, spec["args"], f"{where}[{i}].args", source)



