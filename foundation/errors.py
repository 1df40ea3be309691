"""The user-error type and name suggestions: what every room of the house needs and none owns.

Standard library only, so every package of the project may import it.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """An error the user caused (bad name, bad file, bad config value).

    Entry points print its message as one line, without a traceback.
    """


def closest_match(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to ``name`` (case-insensitive), or None."""
    cands = list(candidates)
    lowered = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hits[0]] if hits else None
