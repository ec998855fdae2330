"""Formula text from references: a table of cases, and the allow-list."""

import pytest

from xlformer import formulas as f

CASES = [
    (f.linear("A1:D1", "Weights!C3:C6", None), "MMULT(A1:D1,Weights!C3:C6)"),
    (f.linear("A1:D1", "W!C3:C6", "W!$C$8"), "MMULT(A1:D1,W!C3:C6)+W!$C$8"),
    (f.scaled_dot("C5:F5", "C6:F6", "$C$3"), "SUMPRODUCT(C5:F5,C6:F6)*$C$3"),
    (f.scaled_dot("C5:F5", "C6:F6", None), "SUMPRODUCT(C5:F5,C6:F6)"),
    (f.exp_shifted("C5", "H5"), "EXP(C5-H5)"),
    (f.row_max("C5:E5"), "MAX(C5:E5)"),
    (f.variance("C5:F5"), "VARP(C5:F5)"),
    (f.rstd("D5", "$C$4"), "1/SQRT(D5+$C$4)"),
    (f.normalize("G5", "$C5", "$E5", "W!C2", "W!C3"), "(G5-$C5)*$E5*W!C2+W!C3"),
    (f.gelu("C5"), "0.5*C5*(1+TANH(SQRT(2/PI())*(C5+0.044715*C5^3)))"),
    (f.relu("C5"), "MAX(0,C5)"),
    (f.char_at("$C$2", 0, "$C$5"), "IF(1>LEN($C$2),$C$5,MID($C$2,1,1))"),
    (f.one_hot("C9", "F$8"), "IF(EXACT(C9,F$8),1,0)"),
    (f.token_id("F9:Z9", "$C$6"), "IFERROR(MATCH(1,F9:Z9,0)-1,$C$6)"),
    (f.lookup("W!$C$2:$F$96", "D9", 2), "INDEX(W!$C$2:$F$96,D9+1,3)"),
    (f.sinusoid(3, 5, 8), "COS(3/POWER(10000,2*2/8))"),
    (f.code_bit(6, 0, 3), "2*MOD(INT(6/2^2),2)-1"),
    (f.argmax("C5:Z5", "AB5"), "MATCH(AB5,C5:Z5,0)-1"),
    (f.concat(["C1", "C2", "C3"]), "C1&C2&C3"),
    (f.bilinear("C5:F5", "L!C9:F9", None, "$C$3"), "SUMPRODUCT(C5:F5,L!C9:F9)*$C$3"),
    (f.bilinear("C5:F5", "L!C9:F9", "G5", "$C$3"), "(SUMPRODUCT(C5:F5,L!C9:F9)+G5)*$C$3"),
    (f.bilinear("C5:F5", "C9:F9", "G5", None), "SUMPRODUCT(C5:F5,C9:F9)+G5"),
    (f.labelled(2, "Input!$C$12"), '"2 "&Input!$C$12'),
    (f.chosen_position("$C$41", 6),
     "IF(ISNUMBER($C$41),IF(AND($C$41>=0,$C$41<=5,$C$41=INT($C$41)),$C$41,0),0)"),
    (f.position_note("C4", 6),
     'IF(ISNUMBER(C4),IF(AND(C4>=0,C4<=5,C4=INT(C4)),"","is not a whole number from 0 to 5: '
     'showing position 0"),"is not a whole number from 0 to 5: showing position 0")'),
    (f.string('say "hi"'), '"say ""hi"""'),
    (f.string('"),HYPERLINK("x'), '"""),HYPERLINK(""x"'),
]


@pytest.mark.parametrize(("got", "want"), CASES)
def test_formula_text(got, want):
    assert got == want


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


@pytest.mark.parametrize("pos", [0, 1, 3, 4, 6, 7])
def test_code_bits_spell_the_position(pos):
    """The bit formulas, evaluated as a spreadsheet would, give the binary code."""
    bits = [eval(f.code_bit(pos, k, 3).replace("^", "**").replace("MOD(", "_mod(")
                 .replace("INT(", "int("), {"_mod": lambda a, b: a % b}) for k in range(3)]
    assert bits == [1 if ch == "1" else -1 for ch in format(pos, "03b")]
