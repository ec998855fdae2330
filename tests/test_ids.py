"""Models that read token ids: imported without a vocabulary, or with multi-character
tokens. The workbook's input is a column of typed ids; the engines must agree with the
reference block by block, also after a user types new ids (and mistakes) into it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import failures, lazy_recalc
from openpyxl import load_workbook
from test_checkpoint import N_CTX, N_HEAD, V, gpt2_checkpoint, gpt2_forward, write

from xlformer import builder, recalc, reference, writer
from xlformer.cli import main
from xlformer.reader import cell_value, open_values, read_block, read_built
from xlformer.spec import Vocab, load_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

WORDS = ["the", " cat", "s", "at", " on", "=mat", "ing", "a", " dog", "!", "ran", " "]
MAX_SEQ = 6
SPEC = Path(__file__).parent / "specs" / "words.toml"  # 8 tokens, 6 positions
# Typed over the built workbook's ids: a fraction, text, an id past the vocabulary, a
# negative, an empty cell, and a good id after them.
TYPED = [V - 1, 2.5, "x", V, -1, None]
RETYPED = [7, 0, 5, 5, 11, 3]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def imported(folder: Path, name: str, vocab: list[str] | None, ids: str = "3 1 4 1"):
    ck = write(gpt2_checkpoint("conv1d", True, True, True), folder / f"{name}-ck.npz")
    options = []
    if vocab is not None:
        (folder / f"{name}-vocab.json").write_text(json.dumps(vocab))
        options = ["--vocab", folder / f"{name}-vocab.json"]
    result = run("import", ck, "--heads", N_HEAD, "--max-seq", MAX_SEQ, "--ids", ids,
                 "-o", folder / f"{name}.toml", *options)
    assert result.exit_code == 0, result.output
    assert "input: token ids" in result.output
    return load_spec(folder / f"{name}.toml")


def test_import_without_a_vocabulary_reads_ids_named_by_their_ids(tmp_path):
    spec = imported(tmp_path, "bare", None)
    assert spec.reads_ids and spec.ids == (3, 1, 4, 1)
    assert spec.vocab.tokens == tuple(map(str, range(V))) and spec.vocab.sep == " "
    trace = reference.forward(spec, make_weights(spec), spec.ids)
    assert reference.decode(spec.vocab, trace["output.ids"]) == " ".join(
        str(i) for i in trace["output.ids"])


def test_reference_of_ids_is_the_gpt2_forward_pass_and_the_text_path(tmp_path):
    ck = gpt2_checkpoint("conv1d", True, True, True)
    spec = imported(tmp_path, "words", WORDS)
    params = make_weights(spec)
    ids = [3, 11, 0, 9, 2]
    want = gpt2_forward(ck, ids + [0], "conv1d")  # the sixth position is padding (id 0)
    np.testing.assert_allclose(reference.forward(spec, params, ids)["logits"], want,
                               rtol=1e-9, atol=1e-9)
    # One code path: a text spec encodes its text, then runs what an ids spec runs.
    text_spec = replace(spec, vocab=Vocab(tuple(" abcdefghijk"), " "), ids=())
    ids_spec = replace(spec, vocab=replace(text_spec.vocab, input="ids"))
    by_text = reference.forward(text_spec, params, "badge")
    by_ids = reference.forward(ids_spec, params, [2, 1, 4, 7, 5])
    assert set(by_text) - set(by_ids) == {"input.onehot"}
    for name, value in by_ids.items():
        np.testing.assert_array_equal(value, by_text[name], err_msg=name)


def test_typed_cells_read_as_the_sheet_reads_them(tmp_path):
    spec = imported(tmp_path, "words", WORDS)
    ids = reference.read_ids(spec.vocab, TYPED + [4, 4], MAX_SEQ)  # longer: cut
    assert list(ids) == [V - 1, 0, 0, 0, 0, 0]
    assert list(reference.read_ids(spec.vocab, (True, 2.0, float("nan")), MAX_SEQ)) == [
        0, 2, 0, 0, 0, 0]


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """Built workbooks of both vocabularies, and copies with ids typed in by openpyxl."""
    folder = tmp_path_factory.mktemp("ids")
    paths = {}
    for name, vocab in (("words", WORDS), ("bare", None)):
        spec = imported(folder, name, vocab)
        paths[name] = folder / f"{name}.xlsx"
        writer.save(builder.build(spec, make_weights(spec), spec.ids), paths[name])
    spec = load_spec(SPEC)  # random weights, post-norm, sinusoidal, untied head with a bias
    paths["spec"] = folder / "spec.xlsx"
    writer.save(builder.build(spec, make_weights(spec), spec.ids), paths["spec"])
    for name in ("words", "bare"):
        for label, values in (("typed", TYPED), ("retyped", RETYPED)):
            wb = load_workbook(paths[name])
            area = read_built(paths[name]).names["input.typed"]
            for i, value in enumerate(values):
                wb[area.sheet].cell(area.row + i, area.col).value = value
            paths[f"{name}-{label}"] = folder / f"{name}-{label}.xlsx"
            wb.save(paths[f"{name}-{label}"])
    return paths


@pytest.fixture(scope="module")
def recomputed(books, tmp_path_factory):
    return lazy_recalc(books, tmp_path_factory)


CASES = [f"{n}{s}" for n in ("words", "bare") for s in ("", "-typed", "-retyped")] + ["spec"]


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", CASES)
def test_ids_workbooks_match_the_reference_in_engines(case, engine, books, recomputed):
    built = read_built(books[case])
    values = open_values(recomputed(engine)[case])
    checks = compare(built, values, engine)
    failed = failures(checks)
    assert not failed, "\n".join(failed)
    trace = reference.forward(built.spec, built.params, built.text)
    assert set(trace) <= {c.block for c in checks} and "input.onehot" not in trace
    names = built.names
    got = [int(v) for v in read_block(values, names["input.ids"]).ravel()]
    assert got == list(trace["input.ids"])
    want = built.spec.vocab.sep.join(built.spec.vocab.tokens[i] for i in trace["output.ids"])
    assert cell_value(values, names["output_text"]) == want
    if case == "spec":
        tokens = [cell_value(values, names["input.chars"], i) for i in range(MAX_SEQ)]
        assert got == [4, 5, 2, 7, 0, 0]  # '=sum(1)' stays text in every engine
        assert tokens == ["=sum(1)", " ", " cat", "!", "<pad>", "<pad>"]
    if case.endswith("-typed"):  # mistakes are notes and padding, never error values
        notes = [cell_value(values, names["input.note"], i) for i in range(MAX_SEQ)]
        assert got == [V - 1, 0, 0, 0, 0, 0]
        assert notes[0] in ("", None) and notes[-1] == "padding"
        assert all(n == f"not a token id 0 to {V - 1}: read as padding" for n in notes[1:5])
    if case.endswith("-retyped"):
        assert got == RETYPED
        tokens = [cell_value(values, names["input.chars"], i) for i in range(MAX_SEQ)]
        assert tokens == [built.spec.vocab.tokens[i] for i in RETYPED]


# --- the command line -----------------------------------------------------------------

def test_cli_builds_and_refuses_the_wrong_kind_of_input(tmp_path):
    spec_path = tmp_path / "bare.toml"
    imported(tmp_path, "bare", None)
    out = tmp_path / "bare.xlsx"
    assert run("build", spec_path, "--ids", "5, 6 7", "-o", out).exit_code == 0
    assert read_built(out).text == (5, 6, 7, None, None, None)
    for args, message in (
            (("--text", "abc"), "bare reads token ids (vocab.input = \"ids\"): give --ids"),
            (("--ids", "1 x"), "--ids must be whole numbers separated by spaces, not '1 x'"),
            (("--ids", f"1 {V}"), f"input has token ids outside 0..{V - 1}: {V} at 1"),
            (("--ids", "1 1 1 1 1 1 1"), "input has 7 token ids, more than max_seq (6)")):
        result = run("build", spec_path, *args, "-o", tmp_path / "no.xlsx")
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.count("Error:") == 1 and not (tmp_path / "no.xlsx").exists()
    assert "give --text, not --ids" in run("build", "reverse", "--ids", "1",
                                           "-o", tmp_path / "no.xlsx").output


def test_import_refuses_text_for_a_model_that_reads_ids(tmp_path):
    ck = write(gpt2_checkpoint("conv1d", True, True, True), tmp_path / "ck.npz")
    result = run("import", ck, "--heads", N_HEAD, "--text", "ab", "-o", tmp_path / "x.toml")
    assert result.exit_code == 2 and "give --ids, not --text" in result.output
    result = run("import", ck, "--heads", N_HEAD, "--ids", f"{N_CTX} {V}",
                 "-o", tmp_path / "x.toml")
    assert result.exit_code == 2 and f"outside 0..{V - 1}: {V} at 1" in result.output
    assert not (tmp_path / "x.toml").exists() and not (tmp_path / "x.npz").exists()
