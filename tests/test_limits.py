"""Excel's limits are checked while the layout is planned: a spec that would cross one
stops with an error naming the block and the limit, and nothing is written."""

import pytest
from click.testing import CliRunner

from xlformer import builder
from xlformer import formulas as f
from xlformer.builder import transposed_blocks
from xlformer.cli import main
from xlformer.limits import LimitError, check_formula
from xlformer.spec import parse_spec
from xlformer.weights import make_weights


def test_a_formula_of_8192_characters_passes_and_one_more_does_not():
    check_formula("=" + "1+" * 4095 + "1")  # 8,192 characters
    with pytest.raises(LimitError, match="8,193 characters is longer than 8,192"):
        check_formula("=" + "1+" * 4095 + "12")


def test_a_call_may_take_255_arguments_but_not_256():
    check_formula("=SUM(" + ",".join(["1"] * 255) + ")")
    with pytest.raises(LimitError, match="more than 255 arguments"):
        check_formula("=SUM(" + ",".join(["1"] * 256) + ")")
    check_formula('=SUM(1,"' + "," * 300 + '")')  # commas in a string are not arguments


def test_formulas_may_nest_64_levels_but_not_65():
    check_formula("=" + "ABS(" * 64 + "1" + ")" * 64)
    with pytest.raises(LimitError, match="nests more than 64 levels"):
        check_formula("=" + "ABS(" * 65 + "1" + ")" * 65)
    check_formula('=LEN("' + "(" * 100 + '")')


def test_every_formula_is_checked_on_its_way_into_the_book():
    with pytest.raises(LimitError):
        f.prepare("+".join(["A1"] * 3000))


SPEC = """
name = "limits"
text = ""
[vocab]
tokens = {tokens}
[model]
max_seq = {max_seq}
d_model = 1
n_head = 1
n_layer = 0
positions = "none"
[weights]
source = "random"
"""


def _build(tmp_path, monkeypatch, spec: str):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(spec, encoding="utf-8")
    (tmp_path / "s.xlsx").write_bytes(b"previous workbook")
    result = CliRunner().invoke(main, ["build", "s.toml", "-o", "s.xlsx"])
    assert result.exit_code == 2, result.output
    assert (tmp_path / "s.xlsx").read_bytes() == b"previous workbook"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml", "s.xlsx"]
    assert len(result.output.strip().splitlines()) == 1
    return result.output.strip()


def test_a_vocabulary_wider_than_16384_columns_runs_down_the_rows():
    tokens = [chr(0x4E00 + i) for i in range(16_400)]  # 16,400 printable CJK characters
    spec = parse_spec(SPEC.format(tokens="[\n" + ",\n".join(f'"{t}"' for t in tokens) + "]",
                                  max_seq=2))
    book = builder.build(spec, make_weights(spec), spec.text)  # places blocks, checks limits
    onehot = book.names["input.onehot"]
    assert (onehot.nrows, onehot.ncols) == (16_400, 2)
    assert "input.onehot" in transposed_blocks(spec)


def test_a_vocabulary_longer_than_a_sheet_stops_the_build(tmp_path, monkeypatch):
    spec = SPEC.format(tokens="[]", max_seq=1).replace(
        "tokens = []", 'input = "ids"\nsize = 1_048_577').replace('text = ""', "ids = [0]")
    message = _build(tmp_path, monkeypatch, spec)
    assert message.startswith("Error: block wte on sheet Weights would reach row 1,04")
    assert message.endswith("; a sheet has at most 1,048,576 rows")


def test_more_positions_than_rows_stops_the_build(tmp_path, monkeypatch):
    spec = SPEC.format(tokens='["a", "b"]', max_seq=1_048_576)
    assert _build(tmp_path, monkeypatch, spec) == (
        "Error: block input.chars on sheet Input would reach row 1,048,585; "
        "a sheet has at most 1,048,576 rows")


def test_a_spec_line_longer_than_a_cell_stops_the_build(tmp_path, monkeypatch):
    spec = SPEC.format(tokens='["a", "b"]', max_seq=2) + f'# {"x" * 32_800}\n'
    row = len(spec.splitlines()) + 1  # the Spec sheet shows line n in row n + 1
    assert _build(tmp_path, monkeypatch, spec) == (
        f"Error: cell Spec!A{row} holds 32,802 characters; a cell holds at most 32,767")
