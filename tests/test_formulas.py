"""The allow-list and the file form of formulas. What each formula computes is checked
by value, in both engines, in test_formula_values.py."""

import pytest

from xlformer import formulas as f


def test_a_quoted_string_hides_what_looks_like_a_call():
    """A doubled quote keeps the text inside the string: no function call escapes it."""
    assert f.functions_in(f.concat(["A1", f.string('"),HYPERLINK("x')])) == set()
    assert f.prepare(f.string('=cmd|" /C calc"!A0')) == '="=cmd|"" /C calc""!A0"'


def test_prepare_adds_equals_and_rejects_unlisted_functions():
    assert f.prepare("SUM(A1:A3)") == "=SUM(A1:A3)"
    with pytest.raises(ValueError, match="LET"):
        f.prepare("LET(x,1,x)")
    with pytest.raises(ValueError, match="TRANSPOSE"):
        f.prepare("SUMPRODUCT(A1:A3,TRANSPOSE(B1:D1))")


def test_prepare_prefixes_functions_newer_than_excel_2007(monkeypatch):
    monkeypatch.setitem(f.FUNCTIONS, "CONCAT", True)
    assert f.prepare("CONCAT(A1,B1)") == "=_xlfn.CONCAT(A1,B1)"


def test_functions_in_ignores_strings_and_references():
    assert f.functions_in('IF(A1>0,"MAX(",SUM(B1:B2))') == {"IF", "SUM"}
    assert f.functions_in("Layer0!C5+EXP(D5)") == {"EXP"}
