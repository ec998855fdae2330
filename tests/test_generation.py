"""Live generation: the sheet's one pass equals the reference's step-by-step greedy decode.

Templates `alphabet` (decoder-only) and `copy` (encoder-decoder), and seeded random
generating specs that mix the switches, are recomputed in both engines; the formulas
are read to prove that no position reads a later one. Gnumeric silently iterates a
circular reference instead of reporting it, so the engine-side proof that the layout
has none is LibreOffice's: a workbook made circular on purpose shows error values
there, and the real ones do not.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

import numpy as np
import openpyxl
import pytest
from helpers import (
    Workbooks,
    build_template,
    error_cells,
    failures,
    lazy_recalc,
    selected,
    type_into,
)

from xlformer import builder, reference, writer
from xlformer.reader import cell_value, open_values, read_block, read_built
from xlformer.recalc import ENGINES
from xlformer.spec import SpecError, parse_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

COUNT = 6  # random generating specs: even seeds decoder-only, odd ones encoder-decoders


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def random_generating_spec(seed: int) -> str:
    rng = random.Random(seed)
    enc_dec = seed % 2 == 1
    n_head, head_size = rng.randint(1, 2), rng.randint(1, 3)
    max_seq = rng.randint(4, 7)
    tokens = rng.sample("abcdefgh.=+", rng.randint(3, 8))
    lines = [f'name = "gen-{seed}"', "[vocab]",
             "tokens = [" + ", ".join(map(_toml_str, tokens)) + "]"]
    target = rng.sample("xyzwv^$", rng.randint(3, 6)) if enc_dec and seed % 3 else tokens
    if enc_dec and target is not tokens:
        lines += ["[target_vocab]", "tokens = [" + ", ".join(map(_toml_str, target)) + "]"]
    lines += [
        "[model]", f"max_seq = {max_seq}", f"d_model = {n_head * head_size + rng.randint(0, 2)}",
        f"n_head = {n_head}", f"head_size = {head_size}", f"n_layer = {rng.randint(1, 2)}",
        f"n_enc_layer = {rng.randint(1, 2) if enc_dec else 0}",
        f"mlp = {_b(rng.random() < 0.7)}", f"d_ff = {rng.randint(1, 5)}",
        f'norm = "{["pre", "post", "none"][seed % 3]}"',
        f'positions = "{["learned", "sinusoidal", "none"][seed // 2 % 3]}"',
        f"residual = {_b(rng.random() < 0.8)}", f"bias = {_b(rng.random() < 0.5)}",
        "[head]", f"tied = {_b(rng.random() < 0.5)}",
        "[weights]", 'source = "random"', f"seed = {seed}", "std = 1.5",
        "[generate]", f"steps = {rng.randint(2, max_seq - 1)}",
        f"temperature = {[0.0, 0.8, 2.0][seed % 3]}", f"top_k = {rng.randint(0, 2)}",
        f"seed = {seed}",
    ]
    if rng.random() < 0.7:
        lines.append(f"end = {_toml_str(rng.choice(target))}")
    if enc_dec:
        lines.append(f"start = {_toml_str(target[0])}")
    return "\n".join(lines) + "\n"


def random_prompt(seed: int, tokens, max_seq: int) -> str:
    rng = random.Random(seed + 1000)
    return "".join(rng.choice(tokens) for _ in range(rng.randint(1, max_seq - 1)))


# (case, template, text built with, text typed in afterwards or None)
TEMPLATE_CASES = [
    ("alphabet-abc", "alphabet", "abc", None),
    ("alphabet-end", "alphabet", "wxy", None),
    ("alphabet-full", "alphabet", "abcdefgh", None),
    ("alphabet-empty", "alphabet", "", None),
    ("copy-hello", "copy", "hello", None),
    ("copy-long", "copy", "abcdefgh", None),
    ("copy-empty", "copy", "", None),
    ("live-alphabet", "alphabet", "abc", "pqrs"),
    ("live-alphabet-end", "alphabet", "abc", "xy"),
    ("live-copy", "copy", "hello", "spread"),
    ("live-copy-unknown", "copy", "hello", "ab7c"),
]
# Teacher forcing, switched on by typing a target: (template, source or prompt, target)
TEACHER_CASES = {
    "teach-copy": ("copy", "hello", "help$"),
    "teach-alphabet": ("alphabet", "abc", "dexg"),
}
# Top-p typed into built workbooks: three recomputed workbooks.
TOP_P_CASES = {
    # At temperature 1 a uniform of 0.999 reaches into alphabet's tail of unlikely letters.
    "top-p-alphabet": {"gen.temperature": 1, "gen.top_p": 0.99, "gen.uniform": [0.999] * 8},
    # Tokens 2 and 3 tie exactly (see tied_pair); no top-k.
    "top-p-tie": {"gen.top_k": 0, "gen.top_p": 0.5, "gen.uniform": [0.3] * 4},
    # Not a number: top-p is off (top-k = 2 still acts), and a note says why.
    "top-p-text": {"gen.top_p": "most"},
}


# Mistakes typed into the controls, and targets longer than the positions left: four
# recomputed workbooks. Each control reads as its fallback (temperature 0: greedy; top-k
# 0 and top-p 1: every token), a note says why, and verify's reference reads the cells
# the same way. (template and text, or None for the sampled spec and PROMPT; what is typed)
MISTAKE_CASES = {
    "typed-text": ("alphabet", "abc",
                   {"gen.temperature": "hot", "gen.top_k": 2.5, "gen.top_p": 1.5}),
    # sampling (as -1 read as -1 would), a uniform of 0.001 takes the first token, which
    # is not the most likely one
    "typed-negative": (None, None, {"gen.temperature": -1, "gen.top_k": 6, "gen.top_p": 0,
                                    "gen.uniform": [0.001] * 4}),
    "typed-empty-teach": ("copy", "abcdefgh", {"gen.temperature": None, "gen.top_k": -1,
                                               "gen.top_p": -0.5, "target_text": "abcdefghij$"}),
    "teach-long-target": ("alphabet", "abcde", {"gen.top_k": "all", "target_text": "fghijk"}),
}
# How each case's controls read (temperature, top-k, top-p), worked out from the rules.
MISTAKES_READ = {"typed-text": (0.0, 0, 1.0), "typed-negative": (0.0, 0, 1.0),
                 "typed-empty-teach": (0.0, 0, 1.0), "teach-long-target": (0.0, 0, 1.0)}
TEMPERATURE_WHY = "not a number of 0 or more: read as 0 (greedy)"
TOP_P_WHY = "not a number above 0 and at most 1: every token is kept"
TOP_K_28 = "not a whole number from 0 to 28: read as 0 (all tokens)"  # alphabet's, copy's
# What the notes say, by hand; an empty note reads back as None or "".
NOTES = {
    "typed-text": {"gen.temperature_note": TEMPERATURE_WHY, "gen.top_k_note": TOP_K_28,
                   "gen.top_p_note": TOP_P_WHY, "gen.target_note": ""},
    "typed-negative": {"gen.temperature_note": TEMPERATURE_WHY, "gen.top_p_note": TOP_P_WHY,
                       "gen.top_k_note": "not a whole number from 0 to 5: read as 0 "
                                         "(all tokens)"},
    "typed-empty-teach": {
        "gen.temperature_note": TEMPERATURE_WHY, "gen.top_k_note": TOP_K_28,
        "gen.top_p_note": TOP_P_WHY,
        "gen.target_note": "the target has 11 characters; the 8 positions (max_seq) score "
                           "only 8 of them",
        "input.length_note": "the input has 8 characters; the decoder generates at most 7 "
                             "tokens (generate.steps)"},
    "teach-long-target": {
        "gen.temperature_note": "", "gen.top_k_note": TOP_K_28, "gen.top_p_note": "",
        "gen.target_note": "the target has 6 characters; after the prompt of 5 characters, "
                           "the 8 positions (max_seq) score only 4 of them"},
    # copy's decoder writes 7 tokens (generate.steps), so an 8-letter source loses one
    "copy-long": {"input.length_note": "the input has 8 characters; the decoder generates "
                                       "at most 7 tokens (generate.steps)"},
    "copy-hello": {"input.length_note": "the input has 5 characters; positions 5 to 7 read "
                                        "the padding token ' '"},
    "teach-copy": {"gen.target_note": ""},  # 5 of 8 positions
    "teach-alphabet": {"gen.target_note": "", "gen.temperature_note": "",
                       "gen.top_k_note": ""},  # 4 after a prompt of 3: 6 positions left
}


def tied_pair(spec):
    """The sampled spec's weights with tokens 2 and 3 given the same output head column,
    so every position gives them exactly the same logit and probability."""
    params = make_weights(spec)
    assert not spec.head.tied and not spec.head.bias
    params["lm_head.weight"][:, 2] = params["lm_head.weight"][:, 3]
    return params


CASES = ([c[0] for c in TEMPLATE_CASES] + [f"gen-{seed}" for seed in range(COUNT)]
         + ["typed-greedy", "typed-uniforms", "typed-top-k", *TEACHER_CASES, *TOP_P_CASES,
            *MISTAKE_CASES])


def _sampled_book(path, params=None):
    """The sampled spec's workbook, with the prompt PROMPT."""
    spec = parse_spec(random_generating_spec(SAMPLED_SEED))
    writer.save(builder.build(spec, make_weights(spec) if params is None else params(spec),
                              PROMPT), path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, request):
    """case -> workbook, each built when first asked for (and the cases the run selects
    recomputed together, see helpers.Workbooks)."""
    folder = tmp_path_factory.mktemp("gen")
    templates = {case: (template, text, typed) for case, template, text, typed in TEMPLATE_CASES}

    def make(case: str):
        path = folder / f"{case}.xlsx"
        if case in templates:
            template, text, typed = templates[case]
            build_template(template, path, text)
            if typed is not None:
                type_into(path, "input_text", typed)
        elif case.startswith("gen-"):
            spec = parse_spec(random_generating_spec(seed := int(case[4:])))
            text = random_prompt(seed, spec.vocab.tokens, spec.model.max_seq)
            writer.save(builder.build(spec, make_weights(spec), text), path)
        elif case == "circular":
            _made_circular(build_template("alphabet", path))
        elif case in TEACHER_CASES:
            template, text, target = TEACHER_CASES[case]
            build_template(template, path, text)
            type_controls(path, {"target_text": target})
        elif case in SAMPLING_CASES:
            type_controls(_sampled_book(path), SAMPLING_CASES[case])
        elif case in TOP_P_CASES:
            if case == "top-p-alphabet":
                build_template("alphabet", path, "abc")
            else:
                _sampled_book(path, tied_pair if case == "top-p-tie" else None)
            type_controls(path, TOP_P_CASES[case])
        else:
            template, text, controls = MISTAKE_CASES[case]
            if template is None:
                _sampled_book(path)
            else:
                build_template(template, path, text)
            type_controls(path, controls)
        return path

    return Workbooks([*CASES, "circular"], make, selected(request, "case"))


# A decoder-only spec sampling at temperature 2, and what a user types into its controls.
SAMPLED_SEED = 2
PROMPT = "".join(parse_spec(random_generating_spec(SAMPLED_SEED)).vocab.tokens[1:3])
SAMPLING_CASES = {
    "typed-greedy": {"gen.temperature": 0},
    "typed-uniforms": {"gen.uniform": [0.999, 0.001, 0.5, 0.999]},
    "typed-top-k": {"gen.temperature": 5, "gen.top_k": 1},
}


def type_controls(path, controls: dict) -> None:
    names = read_built(path).names
    wb = openpyxl.load_workbook(path)
    for name, value in controls.items():
        area = names[name]
        value = value if isinstance(value, list) else [value]
        assert len(value) == area.nrows
        for i, v in enumerate(value):
            wb[area.sheet].cell(area.row + i, area.col).value = v
    wb.save(path)


def _made_circular(path):
    """The attention sums as they were before generation: every row reads all rows of v."""
    built = read_built(path)
    heads, wts, v = (built.names[n] for n in
                     ("h.0.attn.heads", "h.0.attn.head0.weights", "h.0.attn.head0.v"))
    wb = openpyxl.load_workbook(path)
    for i in range(heads.nrows):
        for j in range(heads.ncols):
            row = f"{_span(wts.row + i, wts.col, 1, wts.ncols)}"
            col = f"{_span(v.row, v.col + j, v.nrows, 1)}"
            wb[heads.sheet].cell(heads.row + i, heads.col + j).value = f"=MMULT({row},{col})"
    wb.save(path)
    return path


def _span(row, col, nrows, ncols):
    from xlformer import a1
    return a1.span(row, col, nrows, ncols)


@pytest.fixture(scope="module")
def recomputed(built, tmp_path_factory):
    return lazy_recalc(built, tmp_path_factory)


def test_random_generating_specs_cover_both_kinds_and_the_switches():
    specs = [parse_spec(random_generating_spec(s)) for s in range(COUNT)]
    assert {s.model.encoder_decoder for s in specs} == {True, False}
    assert {s.model.norm for s in specs} == {"pre", "post", "none"}
    assert any(s.target_vocab is not None for s in specs)
    assert any(s.generate.end for s in specs) and any(not s.generate.end for s in specs)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES)
def test_generation_matches_the_step_by_step_decode(case, engine, built, recomputed):
    """Every block, gen.ids position by position, and the generated text."""
    workbook = read_built(built[case])
    checks = compare(workbook, open_values(recomputed(engine)[case]), engine)
    failed = failures(checks)
    assert not failed, "\n".join(failed)
    assert {"gen.ids", "output_text", "error values"} <= {c.block for c in checks}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("case", "generated", "status"), [
    ("alphabet-abc", "defgh", "ppp" + "ggggg"),
    ("live-alphabet", "tuvw", "pppp" + "gggg"),
    ("live-alphabet-end", "z.", "pp" + "ge" + "uuuu"),
    ("alphabet-empty", "", "u" * 8),
    ("live-copy", "spread$", "s" + "gggggge"),
    ("copy-long", "abcdefg", "s" + "g" * 7),
    ("live-copy-unknown", "ab$", "s" + "gge" + "uuuu"),
    # teacher forcing: the true target is fed (t), output_text is what the model predicts
    ("teach-copy", "hello", "s" + "tttt" + "uuu"),
    ("teach-alphabet", "defy", "ppp" + "ttt" + "uu"),
    # typed mistakes: greedy; a target cut to the positions left is scored as far as it fits
    ("typed-text", "defgh", "ppp" + "ggggg"),
    ("typed-empty-teach", "abcdefgh", "s" + "t" * 7),
    ("teach-long-target", "fghi", "ppppp" + "ttt"),
])
def test_typed_text_regenerates_live(case, generated, status, engine, built, recomputed):
    """What a user sees after typing, with no rebuild: the continuation and each
    position's role ("prompt", "start", "generated", "end", "unused")."""
    values = open_values(recomputed(engine)[case])
    workbook = read_built(built[case])
    assert (cell_value(values, workbook.names["output_text"]) or "") == generated
    _, ids = reference.generate(workbook.spec, workbook.params, workbook.text)
    assert reference.decode(workbook.spec.out_vocab, ids) == generated
    roles = read_block(values, workbook.names["gen.status"]).ravel().tolist()
    assert "".join(r[0] for r in roles) == status


@pytest.mark.parametrize("engine", ENGINES)
def test_teacher_forcing_scores_each_position_against_the_target(engine, built, recomputed):
    """copy predicts the source 'hello' while the target is 'help$': positions 3 and 4
    are wrong and cost a lot, the first three are right and cost almost nothing."""
    values = open_values(recomputed(engine)["teach-copy"])
    names = read_built(built["teach-copy"]).names
    loss = read_block(values, names["teacher.loss"]).ravel()
    assert read_block(values, names["teacher.scored"]).ravel().tolist() == [1] * 5 + [0] * 3
    assert max(loss[:3]) < 0.05 and min(loss[3:5]) > 5 and not loss[5:].any()
    mean = cell_value(values, names["teacher.mean_loss"])
    assert mean == pytest.approx(loss.sum() / 5, rel=1e-12)
    assert cell_value(values, names["gen.view"]).startswith("Teacher forcing:")
    generating = open_values(recomputed(engine)["copy-hello"])
    assert cell_value(generating, names["gen.view"]).startswith("Generation:")


def test_a_circular_layout_shows_errors_in_libreoffice(built, recomputed):
    """The check above can fail: attention sums reading all rows make a cycle."""
    values = open_values(recomputed("libreoffice")["circular"])
    checks = compare(read_built(built["circular"]), values, "libreoffice")
    errors = next(c for c in checks if c.block == "error values")
    assert any("in h.0.attn.heads: " in p for p in errors.problems)


# --- reading the formulas: no position reads a later one ------------------------------

_REF = re.compile(r"(?:(?P<sheet>'[^']+'|[A-Za-z][A-Za-z0-9_]*)!)?"
                  r"\$?(?P<c1>[A-Z]{1,3})\$?(?P<r1>\d+)(?::\$?(?P<c2>[A-Z]{1,3})\$?(?P<r2>\d+))?"
                  r"(?![A-Za-z0-9_(])")


def referenced_cells(formula: str, here: str):
    """(sheet, row, col) of every cell a formula reads."""
    from openpyxl.utils import column_index_from_string as col
    code = re.sub(r'"[^"]*"', '""', formula)
    for m in _REF.finditer(code):
        sheet = (m["sheet"] or here).strip("'")
        r1, c1 = int(m["r1"]), col(m["c1"])
        r2, c2 = (int(m["r2"]), col(m["c2"])) if m["c2"] else (r1, c1)
        for r in range(r1, r2 + 1):
            for c in range(c1, c2 + 1):
                yield sheet, r, c


def is_source_block(name: str) -> bool:
    """Blocks indexed by source position (encoder side), which every step may read."""
    return (name.startswith(("enc.", "input.")) and ".cross." not in name
            or re.search(r"\.cross\.(c_kv|head\d+\.[kv])$", name) is not None)


def step_of(built) -> dict[tuple[str, int, int], int]:
    """The decoding step (position) each cell of a position-indexed decoder block is at."""
    T, steps = built.spec.model.max_seq, {}
    for name, a in built.names.items():
        if a.nrows != T or name in built.params:
            continue
        if built.spec.model.encoder_decoder and is_source_block(name):
            continue
        for i in range(T):
            for j in range(a.ncols):
                steps[(a.sheet, a.row + i, a.col + j)] = i
    return steps


def later_references(built) -> list[str]:
    steps, found = step_of(built), []
    for (sheet, row, col), formula in built.formulas.items():
        step = steps.get((sheet, row, col))
        if step is None:
            continue
        for cell in referenced_cells(formula, sheet):
            if steps.get(cell, -1) > step:
                found.append(f"{sheet}!R{row}C{col} (step {step}) reads {cell} "
                             f"(step {steps[cell]}): {formula}")
    return found


@pytest.mark.parametrize("case", ["alphabet-abc", "copy-hello",
                                  *[f"gen-{s}" for s in range(COUNT)]])
def test_no_formula_reads_a_later_step(case, built):
    workbook = read_built(built[case])
    steps = step_of(workbook)
    assert {"Output", "Input"} <= {sheet for sheet, _, _ in steps}
    assert not later_references(workbook)


def test_the_later_step_check_finds_a_full_range_sum(built):
    assert later_references(read_built(built["circular"]))


def test_the_reference_decode_is_the_one_pass_over_its_own_output():
    """Causality in the reference: the final pass chooses, at each position before the
    last generated one, exactly the token that was fed next."""
    for seed in range(COUNT):
        spec = parse_spec(random_generating_spec(seed))
        params = make_weights(spec)
        text = random_prompt(seed, spec.vocab.tokens, spec.model.max_seq)
        trace, generated = reference.generate(spec, params, text)
        start = 1 if spec.model.encoder_decoder else len(text)
        fed = trace["gen.ids"].tolist()
        assert fed[start:start + len(generated)] == generated
        chosen = trace["output.ids"].tolist()
        assert chosen[start - 1:start - 1 + len(generated)] == generated


# --- sampling ------------------------------------------------------------------------------

def _sampled_spec(**generate):
    spec = parse_spec(random_generating_spec(SAMPLED_SEED))
    return replace(spec, generate=replace(spec.generate, **generate))


def test_the_sampled_spec_samples():
    spec = parse_spec(random_generating_spec(SAMPLED_SEED))
    assert spec.generate.temperature == 2.0 and spec.generate.steps >= 3
    assert not spec.model.encoder_decoder


@pytest.mark.parametrize("engine", ENGINES)
def test_typed_temperature_zero_is_greedy(engine, built, recomputed):
    values = open_values(recomputed(engine)["typed-greedy"])
    workbook = read_built(built["typed-greedy"])
    assert workbook.spec.generate.temperature == 0
    spec = _sampled_spec(temperature=0.0)
    trace = reference.generate(spec, make_weights(spec), PROMPT)[0]
    assert (trace["output.ids"] == trace["probs"].argmax(axis=-1)).all()
    assert read_block(values, workbook.names["gen.ids"]).ravel().tolist() == \
        trace["gen.ids"].tolist()


@pytest.mark.parametrize("engine", ENGINES)
def test_typed_uniforms_pick_the_reference_tokens(engine, built, recomputed):
    """The first uniform near 1 picks a late token, the next near 0 the first likely one."""
    values = open_values(recomputed(engine)["typed-uniforms"])
    workbook = read_built(built["typed-uniforms"])
    us = SAMPLING_CASES["typed-uniforms"]["gen.uniform"]
    assert list(workbook.spec.generate.uniforms[:len(us)]) == us
    spec = _sampled_spec(uniforms=workbook.spec.generate.uniforms)
    trace, generated = reference.generate(spec, make_weights(spec), PROMPT)
    assert read_block(values, workbook.names["output.ids"]).ravel().tolist() == \
        trace["output.ids"].tolist()
    cum = trace["probs.cum"]
    for p, u in enumerate(us):  # inverse CDF: the first token whose cumulative p exceeds u
        assert trace["output.ids"][p] == min(int((cum[p] <= u).sum()), cum.shape[1] - 1)


def test_uniforms_matter_only_above_temperature_zero():
    picks = {}
    for t in (0.0, 2.0):
        for u in (0.05, 0.5, 0.95):
            spec = _sampled_spec(temperature=t, uniforms=(u,) * 4)
            picks[t, u] = tuple(reference.generate(spec, make_weights(spec), PROMPT)[1])
    assert len({picks[0.0, u] for u in (0.05, 0.5, 0.95)}) == 1
    assert len({picks[2.0, u] for u in (0.05, 0.5, 0.95)}) > 1


def test_top_1_is_greedy_at_any_temperature():
    spec = _sampled_spec(temperature=5.0, top_k=1)
    greedy = _sampled_spec(temperature=0.0)
    assert reference.generate(spec, make_weights(spec), PROMPT)[1] == \
        reference.generate(greedy, make_weights(greedy), PROMPT)[1]


# --- top-p (nucleus) sampling ----------------------------------------------------------

def test_nucleus_by_hand():
    """Rows sorted high to low, summed, each token's mass ahead (of the tokens strictly
    more probable), kept while that mass is below p. Dyadic numbers, so every sum is exact
    and p can land exactly on a cumulative boundary."""
    probs = np.array([[0.125, 0.25, 0.125, 0.5],
                      [0.4, 0.4, 0.2, 0.0]])  # a tie at the top, and a token top-k dropped
    desc, cum, ahead, _ = reference.nucleus(probs, 1.0)
    assert desc.tolist() == [[0.5, 0.25, 0.125, 0.125], [0.4, 0.4, 0.2, 0.0]]
    assert cum.tolist() == [[0.5, 0.75, 0.875, 1.0], [0.4, 0.8, 1.0, 1.0]]
    assert ahead.tolist() == [[0.75, 0.5, 0.75, 0.0], [0.0, 0.0, 0.8, 1.0]]
    kept = {
        0.75: [[0, 1, 0, 1], [1, 1, 0, 0]],  # 0.5 + 0.25 reaches 0.75 exactly: enough
        0.8: [[1, 1, 1, 1], [1, 1, 0, 0]],  # one 0.125 would do, but the two tie: both
        0.81: [[1, 1, 1, 1], [1, 1, 1, 0]],
        0.5: [[0, 0, 0, 1], [1, 1, 0, 0]],  # the tied 0.4s both have nothing ahead
        0.01: [[0, 0, 0, 1], [1, 1, 0, 0]],  # the most probable is always kept
    }
    for p, want in kept.items():
        assert reference.nucleus(probs, p)[3].tolist() == want, p
    for off in (1.0, 1.5, 0.0, -0.5):  # 1 keeps all; the others are not a top-p at all
        assert reference.nucleus(probs, off)[3].tolist() == [[1] * 4] * 2, off


def _hand_sample(top_k: int, top_p: float, u: float):
    """The sampling steps on logits whose softmax is 0.5, 0.3, 0.2 and a tail of ~0."""
    spec = parse_spec(GEN)
    spec = replace(spec, generate=replace(spec.generate, temperature=1.0, top_k=top_k,
                                          top_p=top_p, uniforms=(u,) * 4))
    logits = np.full((4, 27), -60.0)
    logits[:, :3] = np.log([0.5, 0.3, 0.2])
    out: dict = {}
    chosen = reference.sample(spec, logits, out)
    return out, chosen[0]


def test_top_p_comes_after_top_k_and_renormalises():
    out, _ = _hand_sample(0, 0.6, 0.5)  # 0.5 ahead of the 0.3: kept; 0.8 ahead of the 0.2
    assert out["probs.nucleus"][0, :4].tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(out["probs.top_p"][0, :3], [0.625, 0.375, 0], rtol=1e-12)
    out, _ = _hand_sample(2, 0.6, 0.5)  # top-k first: 0.625 and 0.375, and 0.625 >= 0.6
    np.testing.assert_allclose(out["probs"][0, :3], [0.625, 0.375, 0], rtol=1e-12)
    assert out["probs.nucleus"][0, :4].tolist() == [1, 0, 0, 0]
    assert out["probs.top_p"][0, :3].tolist() == [1, 0, 0]
    out, _ = _hand_sample(2, 0.7, 0.5)
    assert out["probs.nucleus"][0, :4].tolist() == [1, 1, 0, 0]
    off, _ = _hand_sample(0, 1.0, 0.5)
    assert off["probs.top_p"].tolist() == off["probs"].tolist() and off["probs.nucleus"].all()


def test_top_p_never_samples_outside_the_nucleus():
    """A uniform of 0.9 falls on the 0.2 token (cumulative 0.5, 0.8, 1); with top-p 0.6
    the cumulative of the kept tokens is 0.625, 1, and it picks the 0.3 token."""
    assert _hand_sample(0, 1.0, 0.9)[1] == 2
    assert _hand_sample(0, 0.6, 0.9)[1] == 1


def test_a_spec_top_p_is_the_workbook_cell(tmp_path):
    spec = parse_spec(GEN.replace("steps = 2", "steps = 2\ntop_p = 0.9"))
    assert parse_spec(GEN).generate.top_p == 1.0 and spec.generate.top_p == 0.9
    writer.save(builder.build(spec, make_weights(spec), "ab"), tmp_path / "g.xlsx")
    built = read_built(tmp_path / "g.xlsx")
    assert cell_value(openpyxl.load_workbook(tmp_path / "g.xlsx"),
                      built.names["gen.top_p"]) == 0.9
    assert built.spec.generate.top_p == 0.9


def nucleus_of(probs_row, p: float) -> list[int]:
    """Which tokens top-p keeps, computed here from the probabilities a sheet shows: whole
    groups of equal probability, most probable first, until their mass reaches p."""
    if not 0 < p < 1:
        return [1] * len(probs_row)
    kept, mass = set(), 0.0
    for value in sorted(set(probs_row), reverse=True):
        if mass >= p:
            break
        group = {j for j, x in enumerate(probs_row) if x == value}
        kept |= group
        mass += value * len(group)
    return [int(j in kept) for j in range(len(probs_row))]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(TOP_P_CASES))
def test_the_sheet_keeps_the_nucleus(case, engine, built, recomputed):
    """Each row's kept set on the sheet, against the rule applied to the sheet's own
    probabilities; the sampled probabilities are the kept ones renormalised."""
    values = open_values(recomputed(engine)[case])
    workbook = read_built(built[case])
    p = workbook.spec.generate.top_p
    probs, keep, kept, drawn = (read_block(values, workbook.names[n]) for n in
                                ("probs", "probs.keep", "probs.nucleus", "probs.top_p"))
    for i, row in enumerate(probs):
        want = [a * b for a, b in zip(nucleus_of(row.tolist(), p), keep[i], strict=True)]
        assert kept[i].tolist() == want, i
    if p < 1:
        np.testing.assert_allclose(drawn, probs * kept / (probs * kept).sum(axis=1)[:, None],
                                   rtol=1e-13, atol=1e-15)
    else:
        assert drawn.tolist() == probs.tolist()


@pytest.mark.parametrize("engine", ENGINES)
def test_typed_top_p_keeps_the_alphabet_in_order(engine, built, recomputed):
    """At temperature 1, uniforms of 0.999 pick unlikely letters (the alphabet skips);
    top-p 0.99 leaves out that tail, and the sheet continues abc with defgh again."""
    values = open_values(recomputed(engine)["top-p-alphabet"])
    workbook = read_built(built["top-p-alphabet"])
    assert workbook.spec.generate.top_p == 0.99  # the typed cell, read back
    assert cell_value(values, workbook.names["output_text"]) == "defgh"
    assert not cell_value(values, workbook.names["gen.top_p_note"])  # None or ""
    off = replace(workbook.spec, generate=replace(workbook.spec.generate, top_p=1.0))
    skipped = reference.generate(off, workbook.params, "abc")[1]
    assert reference.decode(off.out_vocab, skipped) != "defgh"


@pytest.mark.parametrize("engine", ENGINES)
def test_tied_tokens_are_kept_together(engine, built, recomputed):
    """Tokens 2 and 3 have the same probability everywhere; the mass ahead of them is
    below p = 0.5 and one of them would reach it, so a rule taking tokens one at a time
    would keep one. Both are kept (as top-k keeps every token tied with the k-th), the
    least likely token 1 is not, and the sampled tokens differ from top-p off."""
    values = open_values(recomputed(engine)["top-p-tie"])
    workbook = read_built(built["top-p-tie"])
    probs, ahead, kept = (read_block(values, workbook.names[n]) for n in
                          ("probs", "probs.ahead", "probs.nucleus"))
    assert (probs[:, 2] == probs[:, 3]).all() and (ahead[:, 2] == ahead[:, 3]).all()
    assert (ahead[:, 2] < 0.5).all() and (ahead[:, 2] + probs[:, 2] >= 0.5).all()
    assert kept[:, 2].all() and kept[:, 3].all() and not kept[:, 1].any()
    fed = read_block(values, workbook.names["gen.ids"]).ravel().tolist()
    off = replace(workbook.spec, generate=replace(workbook.spec.generate, top_p=1.0))
    assert fed != reference.generate(off, workbook.params, PROMPT)[0]["gen.ids"].tolist()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_top_p_that_is_not_a_number_keeps_every_token_and_says_why(engine, built,
                                                                      recomputed):
    values = open_values(recomputed(engine)["top-p-text"])
    workbook = read_built(built["top-p-text"])
    assert workbook.spec.generate.top_p == 1.0  # read as the sheet reads it
    note = cell_value(values, workbook.names["gen.top_p_note"])
    assert note == "not a number above 0 and at most 1: every token is kept"
    keep, kept = (read_block(values, workbook.names[n]) for n in ("probs.keep", "probs.nucleus"))
    assert kept.tolist() == keep.tolist() and 0 < keep.sum() < keep.size  # top-k still acts


# --- typed mistakes: read as the sheet reads them, with a note -----------------------

@pytest.mark.parametrize("case", list(MISTAKE_CASES))
def test_typed_mistakes_read_as_the_sheet_reads_them(case, built):
    """What verify's reference uses: the fallback, never a refusal."""
    g = read_built(built[case]).spec.generate
    assert (g.temperature, g.top_k, g.top_p) == MISTAKES_READ[case]
    assert type(g.top_k) is int and type(g.temperature) is float


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(NOTES))
def test_the_notes_say_why_and_no_cell_holds_an_error(case, engine, built, recomputed):
    values = open_values(recomputed(engine)[case])
    assert not error_cells(values)
    names = read_built(built[case]).names
    said = {name: cell_value(values, names[name]) or "" for name in NOTES[case]}
    assert said == NOTES[case]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_negative_temperature_is_greedy(engine, built, recomputed):
    """Read as -1 the sheet would sample, and a uniform of 0.001 takes the first token,
    not the most likely one; read as 0 it takes the argmax."""
    values = open_values(recomputed(engine)["typed-negative"])
    workbook = read_built(built["typed-negative"])
    greedy = _sampled_spec(temperature=0.0, top_k=0)
    trace = reference.generate(greedy, make_weights(greedy), PROMPT)[0]
    assert read_block(values, workbook.names["gen.ids"]).ravel().tolist() == \
        trace["gen.ids"].tolist()
    sampled = _sampled_spec(temperature=1.0, top_k=0, uniforms=(0.001,) * 4)
    assert reference.generate(sampled, make_weights(sampled), PROMPT)[0]["gen.ids"].tolist() \
        != trace["gen.ids"].tolist()


# --- specs -------------------------------------------------------------------------------

GEN = """
name = "g"
[vocab]
set = "lowercase"
[model]
max_seq = 4
d_model = 4
n_head = 2
n_layer = 1
[generate]
steps = 2
"""


@pytest.mark.parametrize(("change", "message"), [
    (("n_layer = 1", "n_layer = 1\ncausal = false"), "[generate] needs model.causal = true"),
    (("steps = 2", "steps = 4"), "generate.steps must be 1 .. max_seq - 1 (3), not 4"),
    (("steps = 2", 'steps = 2\nend = "$"'), "generate.end '$' is not one of"),
    (("steps = 2", 'steps = 2\nstart = "a"'), "generate.start is needed by encoder-decoders"),
    (("n_layer = 1", "n_layer = 1\nn_enc_layer = 1"), "generate.start is needed"),
    (("steps = 2", "steps = 2\ntemperature = -1"), "generate.temperature must not be negative"),
    (("steps = 2", "steps = 2\ntop_k = 28"), "generate.top_k must be 0 (all) .. 27, not 28"),
    (("steps = 2", "steps = 2\ntop_p = 0"), "generate.top_p must be above 0 and at most 1 "
                                            "(1: all tokens), not 0.0"),
    (("steps = 2", "steps = 2\ntop_p = 1.5"), "generate.top_p must be above 0 and at most 1"),
    (("steps = 2", "steps = 2\ntop_p = nan"), "(1: all tokens), not nan"),
    (("steps = 2", 'steps = 2\ntop_p = "most"'), "'generate.top_p' must be float, not 'most'"),
    (("[generate]\nsteps = 2", '[target_vocab]\nset = "digits"'), "[target_vocab] is only for"),
    (("[generate]\nsteps = 2", "n_enc_layer = 1"), "needs a [generate] section"),
])
def test_bad_generation_specs_name_the_problem(change, message):
    with pytest.raises(SpecError) as err:
        parse_spec(GEN.replace(*change))
    assert message in str(err.value)


def test_an_encoder_decoder_has_its_weights_under_enc_and_dec():
    spec = parse_spec(GEN.replace("n_layer = 1", "n_layer = 1\nn_enc_layer = 2")
                      .replace("steps = 2", 'steps = 2\nstart = "a"'))
    names = set(make_weights(spec))
    assert {"enc.wte", "enc.h.1.attn.c_attn.weight", "enc.ln_f.weight", "dec.wte",
            "dec.h.0.cross.c_q.weight", "dec.h.0.cross.c_kv.weight", "dec.h.0.ln_cross.bias",
            "dec.ln_f.bias"} <= names
    assert not any(n.startswith("h.") or n.startswith("enc.h.0.cross") for n in names)


@pytest.mark.parametrize("seed", range(COUNT))
def test_builder_blocks_are_the_reference_trace_names(seed):
    spec = parse_spec(random_generating_spec(seed))
    params = make_weights(spec)
    book = builder.build(spec, params, "")
    assert set(book.blocks) == set(reference.forward(spec, params, ""))
    if spec.model.encoder_decoder:
        assert {"enc.h.0.attn.head0.weights", "dec.h.0.cross.head0.weights",
                "dec.h.0.attn.head0.weights"} <= set(book.blocks)


def test_a_long_generation_stays_within_the_formula_limit():
    """120 positions: output_text joins a column (`output.shown`), not one IF per
    position (that made 10,560 characters, and the build stopped)."""
    spec = parse_spec(GEN.replace("max_seq = 4", "max_seq = 120").replace("steps = 2",
                                                                          "steps = 100"))
    book = builder.build(spec, make_weights(spec), "ab")
    area = book.names["output_text"]
    formula = book.sheets[area.sheet].get(area.row, area.col).value
    assert "IF(" not in formula and len(formula) < 8192 and "output.shown" in book.names
