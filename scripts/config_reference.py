#!/usr/bin/env python
"""Write the reference pages generated from the code.

    python scripts/config_reference.py            # rewrite the pages
    python scripts/config_reference.py --check    # exit 1, naming the stale pages, if they differ

``docs/config_reference.md`` (every config key of core/schema.py: type, default, allowed values,
the trainers that read it, one line of meaning) is written whole; in ``docs/datasets.md`` only the
blocks between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` (the named sets and the
dataset types with their arguments) are rewritten. Run it after changing the schema, a dataset's
arguments or a named layout; ``tests/core/test_config_reference.py`` fails until then.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common_utils.cli import help_text, run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=help_text(__doc__, "scripts/config_reference.py"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is not what the code gives")
    args = p.parse_args(argv)

    def job() -> int:
        from core.reference import generated_pages, undocumented_keys
        from foundation.errors import UserError

        missing, stale = undocumented_keys()
        if missing or stale:
            raise UserError("core/schema.py KEY_DOCS: " + "; ".join(
                ([f"no line for {', '.join(missing)}"] if missing else [])
                + ([f"lines for keys the schema does not have: {', '.join(stale)}"] if stale else [])))
        differing = [path for path, text in generated_pages().items()
                     if not path.is_file() or path.read_text(encoding="utf-8") != text]
        if args.check:
            for path in differing:
                print(f"{path.relative_to(REPO_ROOT)} is stale: run python scripts/config_reference.py")
            return 1 if differing else 0
        for path, text in generated_pages().items():
            if path in differing:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
