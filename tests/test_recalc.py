"""Prove xlformer.recalc against the real LibreOffice and Gnumeric engines."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from helpers import require_engine

from xlformer.recalc import (
    ENGINES,
    EngineError,
    EngineMissing,
    available,
    error_value,
    recalc,
)

ROW = [1.5, -2.0, 3.25]  # A1:C1
COL = [4.0, 0.5, -6.0]  # E1:E3
STALE = 999

# Gnumeric writes xlsx without a default cell style; openpyxl warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Workbook contains no default style")


def write_book(path: Path, row: list[float] = ROW, col: list[float] = COL) -> Path:
    """A2 = A1*2, B2 = row·col via MMULT, C2 = SUM(row), D2 = 1/0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = openpyxl.Workbook()
    ws = wb.active
    for i, x in enumerate(row):
        ws.cell(row=1, column=1 + i, value=x)
    for i, x in enumerate(col):
        ws.cell(row=1 + i, column=5, value=x)
    ws["A2"] = "=A1*2"
    ws["B2"] = "=MMULT(A1:C1,E1:E3)"
    ws["C2"] = "=SUM(A1:C1)"
    ws["D2"] = "=1/0"
    wb.save(path)
    return path


def add_stale_cache(path: Path, formula: str, cached: float) -> None:
    """Rewrite the sheet XML so `formula`'s cell carries a wrong cached <v> value."""
    member = "xl/worksheets/sheet1.xml"
    with zipfile.ZipFile(path) as zin:
        entries = {name: zin.read(name) for name in zin.namelist()}
    xml = entries[member].decode()
    empty = f"<f>{formula}</f><v />"
    assert xml.count(empty) == 1, "openpyxl's formula-cell XML changed"
    entries[member] = xml.replace(empty, f"<f>{formula}</f><v>{cached}</v>").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in entries.items():
            zout.writestr(name, data)


def values(path: Path) -> dict[str, object]:
    ws = openpyxl.load_workbook(path, data_only=True).active
    return {c: ws[c].value for c in ("A2", "B2", "C2", "D2")}


def assert_computed(
    got: dict[str, object], row: list[float] = ROW, col: list[float] = COL
) -> None:
    assert got["A2"] == pytest.approx(row[0] * 2)
    assert got["B2"] == pytest.approx(float(np.dot(row, col)))
    assert got["C2"] == pytest.approx(sum(row))
    assert error_value(got["D2"]) == "#DIV/0!"


@pytest.mark.parametrize("engine", ENGINES)
def test_recalc_computes_formulas(engine: str, tmp_path: Path) -> None:
    require_engine(engine)
    src = write_book(tmp_path / "in" / "book.xlsx")
    [out] = recalc([src], engine, tmp_path / "out")
    assert out == tmp_path / "out" / "book.xlsx"
    assert_computed(values(out))


@pytest.mark.parametrize("engine", ENGINES)
def test_stale_cached_value_is_recomputed(engine: str, tmp_path: Path) -> None:
    require_engine(engine)
    src = write_book(tmp_path / "stale.xlsx")
    add_stale_cache(src, "A1*2", STALE)
    assert values(src)["A2"] == STALE  # the input really carries the stale value
    [out] = recalc([src], engine, tmp_path / "out")
    assert_computed(values(out))


@pytest.mark.slow
def test_libreoffice_same_basename_in_one_call(tmp_path: Path) -> None:
    require_engine("libreoffice")
    rows = [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]
    srcs = [
        write_book(tmp_path / d / "book.xlsx", row=r)
        for d, r in zip("ab", rows, strict=True)
    ]
    outs = recalc(srcs, "libreoffice", tmp_path / "out")
    assert len(set(outs)) == 2 and all(o.parent == tmp_path / "out" for o in outs)
    for out, row in zip(outs, rows, strict=True):
        assert_computed(values(out), row=row)


@pytest.mark.parametrize("engine", ENGINES)
def test_corrupt_workbook_raises_engine_error(engine: str, tmp_path: Path) -> None:
    require_engine(engine)
    bad = tmp_path / "corrupt.xlsx"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(EngineError, match=f"{engine}.*corrupt.xlsx"):
        recalc([bad], engine, tmp_path / "out")


def test_missing_engine_raises_with_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not available("gnumeric")
    with pytest.raises(
        EngineMissing, match="apt-get install -y libreoffice-calc-nogui gnumeric"
    ):
        recalc([write_book(tmp_path / "book.xlsx")], "gnumeric", tmp_path / "out")


@pytest.mark.parametrize(
    "value",
    [
        "#VALUE!",
        "#NAME?",
        "#N/A",
        "#NUM!",
        "#DIV/0!",
        "#REF!",
        "#NULL!",
        "#ERROR!",
        "Err:502",
        '#"_xlfn.LET(x)"',
    ],
)
def test_error_value_flags_errors(value: str) -> None:
    assert error_value(value) == value


@pytest.mark.parametrize(
    "value", [None, 0, 1.5, "", "hello", "#hashtag", "Err:", "x #N/A"]
)
def test_error_value_ignores_plain_values(value: object) -> None:
    assert error_value(value) is None
