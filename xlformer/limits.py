"""Excel's limits, checked while the layout is planned, before anything is written.

LibreOffice and Gnumeric enforce fewer of these than Excel does (LibreOffice gives #N/A
for a 9,200-character formula that Gnumeric computes), so passing our engine tests is
not enough: a workbook that crosses one of them would break only in Excel. Blocks are
checked when they are placed, so an oversized model stops before its cells are made.
"""

from __future__ import annotations

from .a1 import MAX_COLS, MAX_ROWS

MAX_FORMULA = 8_192  # characters in a formula
MAX_ARGS = 255  # arguments of one function call
MAX_NESTING = 64  # levels of nested function calls
MAX_CELL_TEXT = 32_767  # characters in a cell


class LimitError(ValueError):
    """A planned workbook that Excel could not open as meant; names the block and limit."""


def check_area(name: str, sheet: str, last_row: int, last_col: int) -> None:
    """A block whose bottom-right cell is (last_row, last_col) must fit on its sheet."""
    if last_row > MAX_ROWS:
        raise LimitError(f"block {name} on sheet {sheet} would reach row {last_row:,}; "
                         f"a sheet has at most {MAX_ROWS:,} rows")
    if last_col > MAX_COLS:
        raise LimitError(f"block {name} on sheet {sheet} would reach column {last_col:,}; "
                         f"a sheet has at most {MAX_COLS:,} columns")


def check_formula(formula: str) -> None:
    """Length, arguments per call and nesting depth of one formula (with its '=')."""
    if len(formula) > MAX_FORMULA:
        raise LimitError(f"a formula of {len(formula):,} characters is longer than "
                         f"{MAX_FORMULA:,}")
    # Counting brackets and commas bounds both depth and arguments: only a formula
    # that could cross a limit is scanned.
    if formula.count("(") > MAX_NESTING or formula.count(",") >= MAX_ARGS:
        _scan(formula)


def _scan(formula: str) -> None:
    args: list[int] = []  # argument count of each open bracket, innermost last
    in_string = False
    for ch in formula:
        if ch == '"':
            in_string = not in_string  # a doubled "" toggles twice: still right
        elif in_string:
            continue
        elif ch == "(":
            args.append(1)
            if len(args) > MAX_NESTING:
                raise LimitError(f"a formula nests more than {MAX_NESTING} levels")
        elif ch == ")" and args:
            args.pop()
        elif ch == "," and args:
            args[-1] += 1
            if args[-1] > MAX_ARGS:
                raise LimitError(f"a function call has more than {MAX_ARGS} arguments")


def check_text(text: str, where: str) -> None:
    if len(text) > MAX_CELL_TEXT:
        raise LimitError(f"{where} holds {len(text):,} characters; a cell holds at most "
                         f"{MAX_CELL_TEXT:,}")
