"""Sheet names and defined names that Excel, LibreOffice, Gnumeric and Google Sheets all accept.

openpyxl writes any name it is given. Excel then refuses the file (or "repairs" it),
LibreOffice silently drops the name, and Gnumeric misreads quoted sheet names with
doubled apostrophes. So every name is held to the strictest common rule: letters,
digits, '_' and '.', starting with a letter or '_', not readable as a cell reference
in A1 or R1C1 notation, and not a logical constant.
"""

from __future__ import annotations

import re

MAX_SHEET_NAME = 31  # Excel's limit
MAX_DEFINED_NAME = 255  # Excel's limit

_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# Stricter than Excel's own grid: LibreOffice may allow more columns, so any 1-3 letters
# followed by digits counts as a cell.
_A1 = re.compile(r"[A-Za-z]{1,3}[0-9]+")
_R1C1 = re.compile(r"[Rr][0-9]*([Cc][0-9]*)?|[Cc][0-9]*")
_RESERVED = {"TRUE", "FALSE"}


class BadName(ValueError):
    """A name some spreadsheet engine would reject or misread."""


def problem(name: str) -> str | None:
    """Why `name` cannot be a sheet or defined name, or None when it can."""
    if not _SHAPE.fullmatch(name):
        return "use letters, digits, '_' and '.', starting with a letter or '_'"
    if name.upper() in _RESERVED:
        return "TRUE and FALSE are logical values"
    if _A1.fullmatch(name) or _R1C1.fullmatch(name):
        return "it reads as a cell reference"
    return None


def check_sheet_name(name: str) -> str:
    return _check(name, "sheet name", MAX_SHEET_NAME)


def check_defined_name(name: str) -> str:
    return _check(name, "defined name", MAX_DEFINED_NAME)


def _check(name: str, kind: str, longest: int) -> str:
    why = problem(name)
    if why is None and len(name) > longest:
        why = f"a {kind} has at most {longest} characters"
    if why:
        raise BadName(f"{kind} {name!r} is not allowed: {why}")
    return name
