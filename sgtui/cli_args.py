"""Argument types shared by the CLI modules."""
from __future__ import annotations

import argparse

SQLITE_MAX_INT = 2**63 - 1  # the largest id SQLite can store


def record_id(text: str) -> int:
    """A run or sample id: a whole number SQLite can hold, so a typo such as
    99999999999999999999 is an argument error, not an OverflowError from SQLite."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= SQLITE_MAX_INT:
        raise argparse.ArgumentTypeError(f"{text} is not an id (ids run from 1 to "
                                         f"{SQLITE_MAX_INT}; `sgtui runs` lists them)")
    return value
