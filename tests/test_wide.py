"""Vocabularies too wide for the sheet run down the rows; models too big for one sheet
spread over several.

GPT-2's 50,257 tokens do not fit across Excel's 16,384 columns. The layout planner then
stores every vocabulary-wide block transposed (a row per token, a column per position)
and records which, so that verify reads them back the right way round. The planner's
column limit is injected: a 95-token vocabulary on a sheet of 64 columns takes the same
layout, small enough to recompute in both engines. Likewise a sheet of 60 rows and 30
columns makes a small model's weights continue on Weights2, Weights3, ... and its bands
wrap, as GPT-2-sized ones would on Excel's sheets.
"""

from __future__ import annotations

import random
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import failures, lazy_recalc
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from specgen import random_tables, random_text, to_toml

from xlformer import builder, catalog, recalc, writer
from xlformer.a1 import MAX_COLS, MAX_ROWS
from xlformer.builder import TRANSPOSED, transposed_blocks
from xlformer.cli import main
from xlformer.layout import EXCEL, SheetLimits, vocab_down
from xlformer.limits import LimitError
from xlformer.reader import open_values, read_built
from xlformer.spec import load_spec, parse_spec
from xlformer.verify import compare
from xlformer.weights import expected_shapes, make_weights

pytestmark = pytest.mark.slow

NARROW = SheetLimits(cols=64)  # fewer columns than the 95 printable characters

TEXT_SPEC = """name = "wide-{tag}"
text = "Hi, hI! ~=1"
[vocab]
set = "printable"
[model]
max_seq = 12
n_positions = 16
d_model = 8
n_head = 2
n_layer = 1
[head]
tied = {tied}
bias = {bias}
"""

IDS_SPEC = """name = "wide-{tag}"
ids = [{ids}]
[vocab]
input = "ids"
size = {size}
[model]
max_seq = {max_seq}
n_positions = {n_positions}
d_model = {d_model}
n_head = 1
n_layer = 1
[head]
tied = {tied}
bias = {bias}
"""

# case -> spec: text input with a tied head; text input with an untied head and its
# bias (lm_head.weight and .bias transposed on the Weights sheet); typed ids.
CASES = {
    "tied": TEXT_SPEC.format(tag="tied", tied="true", bias="false"),
    "untied": TEXT_SPEC.format(tag="untied", tied="false", bias="true"),
    "ids": IDS_SPEC.format(tag="ids", ids="70, 3, 99, 12", size=100, max_seq=6, n_positions=6,
                           d_model=8, tied="false", bias="true"),
}
SPLIT_SPEC = """name = "split"
text = "hello world"
[vocab]
set = "lowercase"
[model]
max_seq = 12
d_model = 8
n_head = 2
n_layer = 2
d_ff = 16
[head]
tied = false
bias = true
"""
SMALL = SheetLimits(rows=60, cols=30)
LIMITS = {"split": SMALL}  # the others: NARROW
CASES["split"] = SPLIT_SPEC
VOCAB_WIDE = {"input.onehot", "logits", "probs.max", "probs.exp", "probs.sum", "probs"}


def gpt2_vocab(tied: bool) -> str:
    """GPT-2's vocabulary and positions table on a small body."""
    return IDS_SPEC.format(tag="gpt2", ids="464, 2068, 50256", size=50257, max_seq=8,
                           n_positions=1024, d_model=8, tied=str(tied).lower(),
                           bias=str(not tied).lower())


def test_the_planner_puts_a_vocabulary_down_the_rows_when_it_does_not_fit_across():
    assert not vocab_down(95, EXCEL) and vocab_down(95, NARROW)
    assert vocab_down(50_257, EXCEL)
    assert not vocab_down(MAX_COLS - 8, EXCEL) and vocab_down(MAX_COLS - 7, EXCEL)


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2s_vocabulary_is_planned_within_excels_limits(tied):
    spec = parse_spec(gpt2_vocab(tied))
    book = builder.build(spec, make_weights(spec), spec.ids)  # a plan: cells come when written
    V, T, d = 50_257, 8, 8
    for name, area in book.names.items():
        assert area.row + area.nrows - 1 <= MAX_ROWS and area.col + area.ncols - 1 <= MAX_COLS, name
    want = (VOCAB_WIDE - {"input.onehot"}) | ({"lm_head.weight", "lm_head.bias"} - (
        {"lm_head.weight", "lm_head.bias"} if tied else set()))
    assert set(transposed_blocks(spec)) == want
    assert any("run down the rows" in notice for notice in book.notices)  # said on build
    assert book.names[TRANSPOSED].ncols == len(want)  # the list verify reads
    shapes = {name: (book.names[name].nrows, book.names[name].ncols) for name in book.names}
    assert shapes["vocab"] == (V, 1) and shapes["wte"] == (V, d) and shapes["wpe"] == (1024, d)
    assert shapes["logits"] == shapes["probs.exp"] == shapes["probs"] == (V, T)
    assert shapes["probs.max"] == shapes["probs.sum"] == (1, T)
    assert shapes["output.ids"] == (T, 1)
    if not tied:
        assert shapes["lm_head.weight"] == (V, d) and shapes["lm_head.bias"] == (V, 1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide")
    paths = {}
    for case, source in CASES.items():
        spec = parse_spec(source)
        paths[case] = folder / f"{case}.xlsx"
        book = builder.build(spec, make_weights(spec), spec.input, LIMITS.get(case, NARROW))
        writer.save(book, paths[case])
    # typed into the built workbook, no rebuild: case matters, a character outside the
    # vocabulary reads as padding
    paths["typed"] = folder / "typed.xlsx"
    shutil.copy(paths["tied"], paths["typed"])
    wb = load_workbook(paths["typed"])
    area = read_built(paths["typed"]).names["input_text"]
    wb[area.sheet].cell(area.row, area.col).value = "zEbRa \u00e9!Z"
    wb.save(paths["typed"])
    return paths


@pytest.fixture(scope="module")
def recomputed(built, tmp_path_factory):
    return lazy_recalc(built, tmp_path_factory)


@pytest.mark.parametrize("case", ["tied", "untied", "ids"])
def test_the_narrow_sheet_stores_the_vocabulary_blocks_transposed(case, built):
    b = read_built(built[case])
    spec, V, T = b.spec, len(b.spec.vocab), b.spec.model.max_seq
    want = VOCAB_WIDE - ({"input.onehot"} if spec.reads_ids else set())
    if not spec.head.tied:
        want |= {"lm_head.weight", "lm_head.bias"}
    assert b.transposed == want
    assert (b.names["logits"].nrows, b.names["logits"].ncols) == (V, T)
    assert (b.names["probs.max"].nrows, b.names["probs.max"].ncols) == (1, T)
    assert (b.names["vocab"].nrows, b.names["vocab"].ncols) == (V, 1)
    assert all(a.col + a.ncols - 1 <= NARROW.cols for n, a in b.names.items()
               if n in want or n == "vocab")
    expected = make_weights(spec)  # read back the right way round
    assert all(np.array_equal(b.params[k], expected[k]) for k in expected)
    assert "chart.probs" not in b.names  # no chart of a vocabulary down the rows


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", [*CASES, "typed"])
def test_transposed_blocks_match_the_reference_in_engines(case, engine, built, recomputed):
    b = read_built(built[case])
    checks = compare(b, open_values(recomputed(engine)[case]), engine)
    failed = failures(checks)
    assert not failed, failed
    compared = {c.block for c in checks}
    assert b.transposed - {"lm_head.weight", "lm_head.bias"} <= compared


def test_generation_refuses_a_vocabulary_down_the_rows():
    spec = load_spec(catalog.resolve("alphabet"))
    with pytest.raises(LimitError, match="runs down the rows, which \\[generate\\]"):
        builder.build(spec, make_weights(spec), spec.input, SheetLimits(cols=20))


def test_a_generating_spec_with_a_huge_vocabulary_is_one_error_line(tmp_path):
    tokens = ", ".join(f'"{chr(0x4E00 + i)}"' for i in range(MAX_COLS))
    spec = tmp_path / "huge.toml"
    spec.write_text(f'name = "huge"\ntext = "\u4e00"\n[vocab]\ntokens = [{tokens}]\n'
                    "[model]\nmax_seq = 4\nd_model = 4\nn_head = 1\nn_layer = 0\n"
                    "[generate]\nsteps = 2\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["build", str(spec), "-o", str(tmp_path / "h.xlsx")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: a vocabulary")
    assert not (tmp_path / "h.xlsx").exists()


def test_weights_continue_on_more_sheets_and_bands_wrap(built):
    b = read_built(built["split"])
    weights = {n: b.names[n] for n in expected_shapes(b.spec)}
    sheets = {a.sheet for a in weights.values()}
    assert {"Weights", "Weights2", "Weights3"} <= sheets
    assert all(s == "Weights" or re.fullmatch(r"Weights[2-9]", s) for s in sheets)
    assert max(a.row + a.nrows - 1 for a in weights.values()) <= SMALL.rows
    wb = load_workbook(built["split"])
    assert wb.sheetnames.index("Weights2") == wb.sheetnames.index("Weights") + 1
    assert "h.0.mlp.act" in b.names and "h.1.mlp.act" in b.names
    for layer in (0, 1):  # c_fc and act (16 columns each) do not fit side by side in 30
        fc, act = b.names[f"h.{layer}.mlp.c_fc"], b.names[f"h.{layer}.mlp.act"]
        assert act.row >= fc.row + fc.nrows and act.col == fc.col
        ws = wb[act.sheet]  # the wrapped band has its own title and position labels
        assert ws.cell(act.row - 2, act.col).value and ws.cell(act.row, 1).value == "pos 0"
    for area in b.names.values():
        assert area.col + area.ncols - 1 <= SMALL.cols or area.ncols > SMALL.cols - 2, area


# Seeded random configurations (tests/specgen.py) on small random sheets: vocabularies
# down the rows, wrapped bands and weights over many sheets, in combinations no fixed
# spec has; n_positions above max_seq where positions are learned.
RANDOM_SEEDS = range(4)


def random_case(seed: int) -> tuple[str, SheetLimits, str]:
    rng = random.Random(seed)
    tables = random_tables(rng, f"random-wide-{seed}", ["learned", "none"][seed % 2],
                           ["pre", "post"][seed // 2 % 2])
    m = tables["model"]
    if m["positions"] == "learned":
        m["n_positions"] = m["max_seq"] + rng.randint(1, 5)
    V = len(tables["vocab"]["tokens"])  # fewer columns than the input band needs: down
    sheet = SheetLimits(rows=rng.randint(24, 60), cols=rng.randint(8, V + 7))
    text = random_text(rng, tables["vocab"]["tokens"], m["max_seq"])
    return to_toml(tables), sheet, text


@pytest.fixture(scope="module")
def random_built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("random-wide")
    paths = {}
    for seed in RANDOM_SEEDS:
        source, sheet, text = random_case(seed)
        spec = parse_spec(source)
        paths[seed] = folder / f"{seed}.xlsx"
        writer.save(builder.build(spec, make_weights(spec), text, sheet), paths[seed])
    return paths


@pytest.fixture(scope="module")
def random_recomputed(random_built, tmp_path_factory):
    return lazy_recalc(random_built, tmp_path_factory)


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_specs_on_small_sheets_match_the_reference(seed, engine, random_built,
                                                          random_recomputed):
    b = read_built(random_built[seed])
    assert b.transposed and "logits" in b.transposed  # every vocabulary here runs down
    checks = compare(b, open_values(random_recomputed(engine)[seed]), engine)
    failed = failures(checks)
    assert not failed, f"spec:\n{random_case(seed)}\n" + "\n".join(failed)


@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          phases=[Phase.generate])
@given(st.randoms(use_true_random=False), st.integers(12, 80), st.integers(8, 40))
def test_any_spec_is_laid_out_within_the_sheet_it_is_planned_for(rng, rows, cols):
    """Blocks never overlap (the writer refuses a cell written twice) and stay within the
    planned sheet, except a block too wide or a weight array too tall for it alone."""
    spec = parse_spec(to_toml(random_tables(rng, "laid-out")))
    book = builder.build(spec, make_weights(spec), "", SheetLimits(rows=rows, cols=cols))
    writer.to_bytes(book)
    weights = set(expected_shapes(spec))
    placed = {n: a for n, a in book.names.items() if not any(  # not a window of a block
        o != a and o.sheet == a.sheet and o.row <= a.row and o.col <= a.col
        and a.row + a.nrows <= o.row + o.nrows and a.col + a.ncols <= o.col + o.ncols
        for o in book.names.values())}
    for name, area in placed.items():
        if area.ncols <= cols - 2:
            assert area.col + area.ncols - 1 <= cols, (name, area)
        if name in weights and area.nrows <= rows - 7:
            assert area.row + area.nrows - 1 <= rows, (name, area)


# Generating templates (decoder-only and an encoder-decoder) on a sheet just wide enough
# for their vocabulary and 80 rows high: their bands wrap and their weights continue on
# more sheets, while the vocabulary stays across (generation needs it so).
GENERATING = ("alphabet", "rhymes", "copy")


@pytest.fixture(scope="module")
def generating(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generating")
    paths = {}
    for name in GENERATING:
        spec = load_spec(catalog.resolve(name))
        V = max(len(spec.vocab), len(spec.out_vocab))
        book = builder.build(spec, make_weights(spec), spec.input, SheetLimits(80, V + 8))
        assert not builder.transposed_blocks(spec, SheetLimits(80, V + 8))
        wide = builder.build(spec, make_weights(spec), spec.input)  # Excel's sheet
        wrapped = {n for n, a in book.names.items() if a.col == 3 < wide.names[n].col}
        assert wrapped or name == "alphabet", name  # blocks moved to the start of a new band
        paths[name] = folder / f"{name}.xlsx"
        writer.save(book, paths[name])
    return paths


@pytest.fixture(scope="module")
def generating_recomputed(generating, tmp_path_factory):
    return lazy_recalc(generating, tmp_path_factory)


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("name", GENERATING)
def test_generation_on_wrapped_bands_and_more_weight_sheets(name, engine, generating,
                                                           generating_recomputed):
    b = read_built(generating[name])
    if name != "alphabet":  # alphabet's weights are few
        assert {"Weights2", "Weights3"} <= {a.sheet for a in b.names.values()}
    checks = compare(b, open_values(generating_recomputed(engine)[name]), engine)
    failed = failures(checks)
    assert not failed, failed
