"""The generated reference pages (docs/config_reference.md, the generated blocks of docs/datasets.md)
agree with the schema and the dataset registries; every key and dataset argument has its line."""
from __future__ import annotations

import dataclasses

import core.reference as ref
import core.schema as schema
from core.reference import config_reference, dataset_arguments, docstring_args, generated_pages, undocumented_keys


def test_committed_pages_are_what_the_code_gives():
    stale = [str(p) for p, text in generated_pages().items() if p.read_text(encoding="utf-8") != text]
    assert not stale, f"stale: {stale}; run python scripts/config_reference.py"


def test_every_config_key_has_one_line_of_meaning():
    assert undocumented_keys() == ([], [])


def test_the_page_follows_the_schema(monkeypatch):
    page = config_reference()
    assert "| `train.keep_last` | int | `3` | >= 1 | all |" in page
    assert "| `ssll.ramp_epochs` | int | `350` | >= 0 | mean_teacher |" in page
    assert "| `train.amp` | str | `off` | `off`, `fp16`, `bf16` | all |" in page
    assert "| `train.ema_decay` | number or null | `0.99` | >= 0 | supervised, mean_teacher |" in page
    train = dict(schema.BASE_SCHEMA["train"])
    train["keep_last"] = dataclasses.replace(train["keep_last"], default=5)
    monkeypatch.setitem(ref.BASE_SCHEMA, "train", train)
    assert "| `train.keep_last` | int | `5` |" in config_reference()  # a changed default changes the page


def test_every_dataset_argument_is_documented():
    from data import DATASETS, list_datasets

    for name in list_datasets():
        rows = dataset_arguments(DATASETS.get(name))
        assert rows, name
        assert all(meaning for _, _, meaning in rows), (name, [a for a, _, m in rows if not m])


def test_docstring_args_reads_groups_and_continuations():
    doc = """Summary.

    Args:
        root: the folder,
            on two lines.
        crop_size, flip: shared text.
        **extra: passed on.

    Returns nothing.
    """
    assert docstring_args(doc) == {"root": "the folder, on two lines.", "crop_size": "shared text.",
                                   "flip": "shared text.", "extra": "passed on."}
