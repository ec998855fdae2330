"""Checking a recomputed workbook against the NumPy reference, block by block."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import a1, builder, recalc, reference
from .reader import Built, cell_value, open_values, oriented, read_block, read_built

# LibreOffice saves 15 significant digits; the engines' own arithmetic differs from
# NumPy's in the last bits. An error passes when
#     |got - want| <= RTOL*|want| + ATOL*scale + SPREAD*moved,
# with scale the block's largest magnitude (at least 1), so values that cancel to near
# zero are judged against the size of their block, and `moved` how far the reference
# itself moves when every weight moves by NUDGE (a few units in the last place). That
# last term is only felt where the model amplifies rounding, e.g. exp(score - max) with
# scores near 1e5: there the engines and NumPy may differ in every digit past the
# tenth, and both are right to the precision their inputs allow.
RTOL = 1e-12
ATOL = 1e-12
NUDGE = 1e-15
SPREAD = 10.0
PAIRWISE_BLOCK = re.compile(r"\.(w_qk|x_wqk|scores_qk)$")


@dataclass
class BlockCheck:
    engine: str
    block: str
    cells: int
    max_abs: float = 0.0
    max_rel: float = 0.0
    problems: list[str] = field(default_factory=list)
    shown: object = None  # output_text's check: the text the engine computed

    @property
    def ok(self) -> bool:
        return not self.problems


def compare(built: Built, values, engine: str) -> list[BlockCheck]:
    """Every traced block of `values` (a recomputed workbook) against the reference
    for the text in the workbook's input cell."""
    if built.spec.generate is not None:  # greedy decode, step by step
        trace, generated = reference.generate(built.spec, built.params, built.text)
    else:
        trace = reference.forward(built.spec, built.params, built.text)
        generated = trace["output.ids"]
    left_out = _left_out(built, trace)
    trace = {name: arr for name, arr in trace.items() if name not in left_out}
    moved = _rounding_spread(built, trace)
    checks = [_compare_block(engine, name, arr, moved[name], built, values)
              for name, arr in trace.items()]
    checks.append(_compare_output(engine, built, values, generated))
    checks.append(_scan_errors(engine, built, values))
    return checks


def _left_out(built: Built, trace: dict) -> set[str]:
    """The pairwise view's blocks when the build leaves the Pairwise sheet out (a big
    model; the build says so). Otherwise every one of them must be in the workbook."""
    if builder.with_pairwise(built.spec):
        return set()
    return {name for name in trace if PAIRWISE_BLOCK.search(name)}


def _rounding_spread(built: Built, trace: dict) -> dict[str, np.ndarray]:
    """|reference - reference with every weight nudged by NUDGE|, per intermediate."""
    rng = np.random.default_rng(0)
    nudged = {k: v * (1 + NUDGE * rng.standard_normal(v.shape)) for k, v in built.params.items()}
    if built.spec.generate is not None:  # the same decode: feed what the reference fed
        other = reference.generate(built.spec, nudged, built.text, fed=trace["gen.ids"])[0]
    else:
        other = reference.forward(built.spec, nudged, built.text)
    return {k: np.abs(np.asarray(trace[k], dtype=np.float64) - other[k]) for k in trace}


def _compare_block(engine, name, want, moved, built: Built, values) -> BlockCheck:
    want = np.asarray(want, dtype=np.float64)
    want = want.reshape(want.shape[0], -1)
    moved = moved.reshape(want.shape)
    check = BlockCheck(engine, name, want.size)
    area = built.names.get(name)
    if area is None:
        check.problems.append("block missing from the workbook")
        return check
    flip = name in built.transposed
    got = oriented(read_block(values, area), flip)

    def where(i, j) -> str:  # the sheet's cell of the reference's (i, j)
        return f"{area.sheet}!{_cell_of(area, *((j, i) if flip else (i, j)))}"

    if got.shape != want.shape or got.dtype != np.float64:
        bad = [(i, j, got[i, j]) for i in range(got.shape[0]) for j in range(got.shape[1])
               if not isinstance(got[i, j], (int, float))][:3]
        check.problems.append(f"non-numbers or wrong shape {got.shape} vs {want.shape}: "
                              + ", ".join(f"{where(i, j)}={shown(v)}"
                                          for i, j, v in bad))
        return check
    err = np.abs(got - want)
    scale = max(1.0, float(np.max(np.abs(want))))
    check.max_abs = float(err.max())
    check.max_rel = float(np.max(relative_error(got, want)))
    bad = np.argwhere(err > RTOL * np.abs(want) + ATOL * scale + SPREAD * moved)
    for i, j in bad[:3]:
        check.problems.append(f"{where(i, j)}: got {shown(got[i, j])}, "
                              f"want {shown(want[i, j])}")
    if len(bad) > 3:
        check.problems.append(f"... {len(bad)} cells out of tolerance")
    return check


def relative_error(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| / |want|, and 0 where `want` is 0: relative to 0 there is no error
    to speak of (the tolerance's absolute part judges those cells)."""
    rel = np.zeros(np.shape(want))
    np.divide(np.abs(got - want), np.abs(want), out=rel, where=want != 0)
    return rel


def shown(value) -> str:
    """A cell's value for a message: text in double quotes (spaces and escapes visible),
    a number as it reads (7, 0.5; never NumPy's np.float64(0.5)), an empty cell as
    (empty)."""
    if value is None:
        return "(empty)"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _compare_output(engine, built: Built, values, ids) -> BlockCheck:
    """output_text against the decoded ids: every position's choice, or the generated tokens."""
    want = reference.decode(built.spec.out_vocab, ids)
    got = cell_value(values, built.names["output_text"])
    got = "" if got is None else got  # an empty text result reads back as None
    check = BlockCheck(engine, "output_text", 1, shown=got)
    if got != want:
        check.problems.append(f"output_text is {got!r}, the reference decodes {want!r}")
    return check


def _scan_errors(engine, built: Built, values) -> BlockCheck:
    """No formula cell anywhere may hold an error value after recomputation."""
    check = BlockCheck(engine, "error values", len(built.formulas))
    for sheet, row, col in built.formulas:
        value = values[sheet].cell(row, col).value
        err = recalc.error_value(value)  # an empty text result reads back as None: fine
        if err:
            where = f"{sheet}!{_cell_at(row, col)} in {_block_of(built, sheet, row, col)}"
            check.problems.append(f"{where}: {err}")
    return check


def _block_of(built: Built, sheet: str, row: int, col: int) -> str:
    for name, a in built.names.items():
        if a.sheet == sheet and a.row <= row < a.row + a.nrows and a.col <= col < a.col + a.ncols:
            return name
    return "a label"


def _cell_of(area, i, j) -> str:
    return _cell_at(area.row + int(i), area.col + int(j))


def _cell_at(row: int, col: int) -> str:
    return a1.cell(row, col)


def verify(path: Path, engines: tuple[str, ...], built: Built | None = None
           ) -> list[BlockCheck]:
    """Recompute `path` in each engine and compare with the reference; `built` is the
    workbook as read_built reads it, if the caller has read it already."""
    built = read_built(path) if built is None else built
    checks = []
    with tempfile.TemporaryDirectory(prefix="xlformer-verify-") as tmp:
        for engine in engines:
            [out] = recalc.recalc([Path(path)], engine, Path(tmp) / engine)
            checks += compare(built, open_values(out), engine)
    return checks
