"""A1 addressing, from a table of cases."""

import pytest

from xlformer import a1

CELLS = [
    ((1, 1), "A1"),
    ((1, 26), "Z1"),
    ((1, 27), "AA1"),
    ((10, 52), "AZ10"),
    ((1, 53), "BA1"),
    ((1, 702), "ZZ1"),
    ((1, 703), "AAA1"),
    ((1, 16384), "XFD1"),
    ((1048576, 1), "A1048576"),
]


@pytest.mark.parametrize(("rc", "want"), CELLS)
def test_cell(rc, want):
    assert a1.cell(*rc) == want


def test_absolute_and_span():
    assert a1.cell(3, 2, absolute=True) == "$B$3"
    assert a1.span(3, 2, 1, 1) == "B3"
    assert a1.span(3, 2, 2, 3) == "B3:D4"
    assert a1.span(1, 1, 1, 4, absolute=True) == "$A$1:$D$1"


@pytest.mark.parametrize(("rc"), [(0, 1), (1, 0), (1, 16385), (1048577, 1)])
def test_out_of_sheet(rc):
    with pytest.raises(ValueError):
        a1.cell(*rc)


@pytest.mark.parametrize(("sheet", "want"), [
    ("Input", "Input!"),
    ("Layer0", "Layer0!"),
    ("my sheet", "'my sheet'!"),
    ("it's", "'it''s'!"),
    ("2nd", "'2nd'!"),
])
def test_sheet_prefix(sheet, want):
    assert a1.sheet_prefix(sheet) == want


@pytest.mark.parametrize(("text", "want"), [
    ("B3:D4", (3, 2, 2, 3)),
    ("A1", (1, 1, 1, 1)),
    ("$A$1:$H$20", (1, 1, 20, 8)),
    ("h20:a1", (1, 1, 20, 8)),  # lower case, corners in either order
    ("XFD1048576", (1048576, 16384, 1, 1)),
])
def test_parse_span(text, want):
    assert a1.parse_span(text) == want


@pytest.mark.parametrize("text", ["", "A", "1", "A1:", ":B2", "A1:B2:C3", "A0", "XFE1",
                                  "A1048577", "A-1", "AAAA1", "A1 B2"])
def test_parse_span_rejects(text):
    with pytest.raises(ValueError):
        a1.parse_span(text)
