"""Specs built to sit on an edge, recomputed in both engines and compared with the reference:
scores far past EXP's overflow, constant LayerNorm rows, masked weights that must be
exactly zero, an output text too long for one formula, and text that looks like formulas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import Workbooks, failures, lazy_recalc, selected

from xlformer import builder, recalc, reference, writer
from xlformer.guide import GUIDE
from xlformer.limits import MAX_FORMULA
from xlformer.reader import cell_value, open_values, read_block, read_built
from xlformer.spec import load_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

SPECS = Path(__file__).parent / "specs"
INJECTIONS = ['=HYPERLINK("http://example.invalid","x")', "=cmd|' /C calc'!A0", "+1+1", "-2",
              "@SUM(A1)", 'say "hi", then =1+1']
CASES = {
    "sharp": ("sharp", "abcdef"), "sharp-repeat": ("sharp", "zzzzzz"),
    "flat": ("flat", "abc"), "long": ("long-output", "ab" * 299 + "b"),
    **{f"inject-{i}": ("injection", text) for i, text in enumerate(INJECTIONS)},
}


@pytest.fixture(scope="module")
def built(request, tmp_path_factory) -> Workbooks:
    folder = tmp_path_factory.mktemp("edges")

    def make(case: str) -> Path:
        name, text = CASES[case]
        spec = load_spec(SPECS / f"{name}.toml")
        path = folder / f"{case}.xlsx"
        writer.save(builder.build(spec, make_weights(spec), text), path)
        return path

    return Workbooks(CASES, make, selected(request, "case"))


@pytest.fixture(scope="module")
def recomputed(built, tmp_path_factory):
    return lazy_recalc(built, tmp_path_factory)


def _trace(path: Path):
    b = read_built(path)
    return b, reference.forward(b.spec, b.params, b.text)


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", CASES)
def test_every_block_matches_reference(case, engine, built, recomputed):
    checks = compare(read_built(built[case]), open_values(recomputed(engine)[case]), engine)
    failed = failures(checks)
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("engine", recalc.ENGINES)
def test_huge_scores_give_exact_probabilities(engine, built, recomputed):
    b, trace = _trace(built["sharp"])
    # The edge is really reached: exp of these would overflow without the shift.
    assert np.abs(trace["h.0.attn.head0.scores"]).max() > 710
    assert np.abs(trace["logits"]).max() > 710
    values = open_values(recomputed(engine)["sharp"])
    for name in ("h.0.attn.head0.weights", "h.0.attn.head1.weights", "probs"):
        got = read_block(values, b.names[name])
        assert got.dtype == np.float64 and np.isfinite(got).all(), name
        assert np.allclose(got.sum(axis=1), 1.0, rtol=0, atol=1e-12), name


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", ["sharp", "sharp-repeat"])
def test_masked_positions_get_exactly_zero_weight(case, engine, built, recomputed):
    b, _ = _trace(built[case])
    values = open_values(recomputed(engine)[case])
    for head in (0, 1):
        got = read_block(values, b.names[f"h.0.attn.head{head}.weights"])
        future = np.triu(np.ones_like(got, dtype=bool), k=1)
        assert (got[future] == 0.0).all()
        assert (got[~future] > 0).any()


@pytest.mark.parametrize("engine", recalc.ENGINES)
def test_a_constant_row_normalizes_to_the_bias(engine, built, recomputed):
    b, trace = _trace(built["flat"])
    assert (trace["h.0.ln_1.var"] == 0).all()  # d_model = 1: no spread at all
    got = read_block(open_values(recomputed(engine)["flat"]), b.names["h.0.ln_1"])
    assert np.array_equal(got.ravel(), np.full(4, b.params["h.0.ln_1.bias"][0]))


@pytest.mark.parametrize("engine", recalc.ENGINES)
def test_a_long_output_is_joined_in_parts(engine, built, recomputed):
    b, trace = _trace(built["long"])
    assert "output.text_parts" in b.names
    assert max(map(len, b.formulas.values())) < MAX_FORMULA / 2
    got = cell_value(open_values(recomputed(engine)["long"]), b.names["output_text"])
    assert got == reference.decode(b.spec.vocab, trace["output.ids"]) and len(got) == 600


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("inject")])
def test_text_that_looks_like_a_formula_stays_text(case, engine, built, recomputed):
    b = read_built(built[case])
    values = open_values(recomputed(engine)[case])
    assert cell_value(values, b.names["input_text"]) == CASES[case][1]
    assert read_block(values, b.names["vocab"]).ravel().tolist() == list(b.spec.vocab.tokens)
    spec_lines = [r[0] for r in values["Spec"].iter_rows(min_col=1, max_col=1, values_only=True)]
    assert set(INJECTIONS[:5]) <= set(spec_lines)  # the description, line by line
    # The only links are the guide's own, internal ones: none came from the text.
    assert not [f"{ws.title}!{c.coordinate}" for ws in values for row in ws.iter_rows()
                for c in row if c.hyperlink and (ws.title != GUIDE or c.hyperlink.target)]
