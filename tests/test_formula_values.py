"""Every formula emitter, evaluated by real engines and compared with values worked out
here by hand (Python's math), not with the emitter's own text.

One small workbook holds every case: each case writes its inputs into cells of its own
row, calls the emitter on their addresses, and puts the formula in column A. The
workbook is recomputed once in LibreOffice and once in Gnumeric.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import openpyxl
import pytest
from helpers import lazy_recalc
from openpyxl.utils import get_column_letter

from xlformer import formulas as f
from xlformer import recalc
from xlformer.reader import open_values

pytestmark = pytest.mark.fast

FIRST_INPUT_COLUMN = 3  # inputs from column C; the formula in A


class Row:
    """The cells of one case: `put` writes inputs left to right and returns their address."""

    columns = 0  # columns below the cases taken so far

    def __init__(self, ws, row: int):
        self.ws, self.row, self.col = ws, row, FIRST_INPUT_COLUMN

    def put(self, *values) -> str:
        """One cell (a single value) or a row of cells; None leaves a cell empty."""
        start = self.col
        for v in values:
            if v is not None:
                self.ws.cell(self.row, self.col, v)
            self.col += 1
        first, last = get_column_letter(start), get_column_letter(self.col - 1)
        return f"{first}{self.row}" if len(values) == 1 else f"{first}{self.row}:{last}{self.row}"

    def column(self, *values) -> str:
        """Values down a column of their own, below the cases (rows 1000 on)."""
        Row.columns += 1
        for k, v in enumerate(values):
            self.ws.cell(1000 + k, Row.columns, v)
        col = get_column_letter(Row.columns)
        return f"{col}1000:{col}{999 + len(values)}"


def gelu(x: float) -> float:  # GPT-2's tanh form, from its paper
    return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


ERR = "not a token id 0 to 4: read as padding"
WHY = "is not a whole number from 0 to 5: showing position 0"


def gen_status_cases():
    """(pos, prompt length or None, steps, previous status, previous choice, end id or
    None, target, want): each rule of README's "Generation"."""
    return [
        (1, 3, 4, "prompt", 0, None, "", "prompt"),  # inside the prompt
        (3, 3, 4, "prompt", 0, None, "", "generated"),  # first after the prompt
        (3, 3, 4, "prompt", 7, 7, "", "end"),  # the token before was the end token
        (5, 3, 2, "generated", 0, None, "", "unused"),  # past the steps
        (4, 3, 4, "end", 0, None, "", "unused"),  # after the end
        (4, 3, 4, "unused", 0, None, "", "unused"),
        (3, 3, 4, "prompt", 0, None, "abc", "target"),  # teacher forcing: 3 - 3 < 3 - 1
        (5, 3, 4, "target", 0, None, "abc", "unused"),  # past the target
        (0, 0, 4, "unused", 0, None, "abc", "unused"),  # an empty prompt scores nothing
        (1, None, 4, "start", 0, None, "", "generated"),  # after the start token
        (2, None, 1, "generated", 0, None, "", "unused"),
        (2, None, 4, "generated", 0, None, "ab", "unused"),  # start token: pos - 1 >= 2 - 1
        (1, None, 4, "start", 0, None, "ab", "target"),
    ]


def cases() -> list[tuple[str, Callable[[Row], tuple[str, object]]]]:
    c: list[tuple[str, Callable[[Row], tuple[str, object]]]] = []

    def case(name, fn):
        c.append((name, fn))

    # input
    case("char_at", lambda r: (f.char_at(r.put("hello"), 1, r.put("_")), "e"))
    case("char_at", lambda r: (f.char_at(r.put("hello"), 5, r.put("_")), "_"))
    case("one_hot", lambda r: (f.one_hot(r.put("a"), r.put("a")), 1))
    case("one_hot", lambda r: (f.one_hot(r.put("a"), r.put("A")), 0))  # case-sensitive
    case("token_id", lambda r: (f.token_id(r.put(0, 0, 1, 0), r.put(9)), 2))
    case("token_id", lambda r: (f.token_id(r.put(0, 0, 0, 0), r.put(9)), 9))
    case("input_note", lambda r: (f.input_note(r.put("ab"), 3, r.put(0, 0)), "padding"))
    case("input_note", lambda r: (f.input_note(r.put("ab"), 0, r.put(0, 0)),
                                  "not in vocabulary: read as padding"))
    case("input_note", lambda r: (f.input_note(r.put("ab"), 0, r.put(0, 1)), ""))
    for typed, want in [(3, 3), (2.5, 9), ("x", 9), (7, 9), (-1, 9), (None, 9)]:
        case("typed_id", lambda r, t=typed, w=want: (f.typed_id(r.put(t), 5, r.put(9)), w))
    for typed, want in [(3, ""), (None, "padding"), ("x", ERR), (2.5, ERR), (5, ERR)]:
        case("typed_note", lambda r, t=typed, w=want: (f.typed_note(r.put(t), 5), w))
    case("lookup", lambda r: (f.lookup(r.column(1, 2, 3), r.put(2), 0), 3))
    shows = " (the model reads it like any character, so it can show in the output)"
    for text, shows_padding, want in [
            ("abcdefg", True, "the input has 7 characters; only the first 6 are read (max_seq)"),
            ("abcdef", True, ""),
            ("abcde", False, "the input has 5 characters; position 5 reads the padding token '_'"),
            ("a", True, "the input has 1 character; positions 1 to 5 read the padding token "
                        "'_'" + shows),
            (None, False, "the input has 0 characters; positions 0 to 5 read the padding "
                          "token '_'")]:
        case("length_note", lambda r, t=text, s=shows_padding, w=want: (
            f.length_note(r.put(t), 6, r.put("_"), s), w))
    for text, want in [
            (None, "the prompt is empty: nothing is generated"),
            ("abcdefg", "the prompt has 7 characters; only the first 6 are read (max_seq), so "
                        "no position is left to generate"),
            ("abcdef", "the prompt fills all 6 positions (max_seq): none is left to generate"),
            ("abcd", "the prompt has 4 characters; the 6 positions (max_seq) leave room for 2 "
                     "of the 3 steps"),
            ("abc", "")]:
        case("prompt_note", lambda r, t=text, w=want: (f.prompt_note(r.put(t), 6, r.put(3)), w))
    # an encoder-decoder's source, max_seq 6, generate.steps 4
    at_most = "the decoder generates at most 4 tokens (generate.steps)"
    for text, want in [
            ("abcdefg", "the input has 7 characters; only the first 6 are read (max_seq); "
                        + at_most),
            ("abcdef", "the input has 6 characters; " + at_most),
            ("abcde", "the input has 5 characters; position 5 reads the padding token '_'; "
                      + at_most),
            ("abcd", "the input has 4 characters; positions 4 to 5 read the padding token "
                     "'_'"),
            (None, "the input has 0 characters; positions 0 to 5 read the padding token '_'")]:
        case("source_note", lambda r, t=text, w=want: (
            f.source_note(r.put(t), 6, r.put("_"), r.put(4)), w))
    # positions
    case("sinusoid", lambda r: (f.sinusoid(3, 5, 8), math.cos(3 / 10000 ** (4 / 8))))
    case("sinusoid", lambda r: (f.sinusoid(3, 4, 8), math.sin(3 / 10000 ** (4 / 8))))
    for k, want in enumerate([1, 1, -1]):  # 6 = 110
        case("code_bit", lambda r, k=k, w=want: (f.code_bit(6, k, 3), w))
    # arithmetic
    case("copy", lambda r: (f.copy(r.put(2.5)), 2.5))
    case("add", lambda r: (f.add(r.put(2.5), r.put(-1)), 1.5))
    case("with_bias", lambda r: (f.with_bias("2*3", r.put(1.5)), 7.5))
    case("with_bias", lambda r: (f.with_bias("2*3", None), 6))
    case("linear", lambda r: (f.linear(r.put(1, 2, 3), r.column(4, 5, 6), r.put(0.5)), 32.5))
    case("linear", lambda r: (f.linear(r.put(1, 2, 3), r.column(4, 5, -6), None), -4))
    case("dot", lambda r: (f.dot(r.put(1, 2, 3), r.put(4, 5, 6)), 32))
    case("scaled_dot", lambda r: (f.scaled_dot(r.put(1, 2), r.put(3, 4), r.put(0.5)), 5.5))
    case("scaled_dot", lambda r: (f.scaled_dot(r.put(1, 2), r.put(3, 4), None), 11))
    case("bilinear", lambda r: (f.bilinear(r.put(1, 2), r.put(3, 4), r.put(1), r.put(0.5)), 6))
    case("bilinear", lambda r: (f.bilinear(r.put(1, 2), r.put(3, 4), None, r.put(0.5)), 5.5))
    case("bilinear", lambda r: (f.bilinear(r.put(1, 2), r.put(3, 4), r.put(1), None), 12))
    case("inv_sqrt", lambda r: (f.inv_sqrt(r.put(4)), 0.5))
    # softmax
    case("row_max", lambda r: (f.row_max(r.put(-3, 7, 2)), 7))
    case("exp_shifted", lambda r: (f.exp_shifted(r.put(1), r.put(3)), math.exp(-2)))
    case("zero", lambda r: (f.zero(), 0))
    case("row_sum", lambda r: (f.row_sum(r.put(1, 2, 3.5)), 6.5))
    case("divide", lambda r: (f.divide(r.put(1), r.put(8)), 0.125))
    # layer norm
    case("mean", lambda r: (f.mean(r.put(1, 2, 3, 4)), 2.5))
    case("variance", lambda r: (f.variance(r.put(1, 2, 3, 4)), 1.25))  # population
    case("rstd", lambda r: (f.rstd(r.put(1.25), r.put(0.75)), 1 / math.sqrt(2)))
    case("normalize", lambda r: (f.normalize(r.put(4), r.put(2.5), r.put(2), r.put(3),
                                             r.put(1)), (4 - 2.5) * 2 * 3 + 1))
    # activations
    for x in (-3.0, -0.5, 0.0, 1.0, 2.5):
        case("gelu", lambda r, x=x: (f.gelu(r.put(x)), gelu(x)))
    case("relu", lambda r: (f.relu(r.put(-2)), 0))
    case("relu", lambda r: (f.relu(r.put(2)), 2))
    # decoding
    case("argmax", lambda r: (f.argmax(r.put(1, 5, 5, 2), r.put(5)), 1))  # the first of ties
    case("token_text", lambda r: (f.token_text(r.put("a", "b", "c"), r.put(2)), "c"))
    case("token_in_column", lambda r: (f.token_in_column(r.column("a", "b", "c"), r.put(1)),
                                       "b"))
    case("labelled", lambda r: (f.labelled(2, r.put("t")), "2 t"))
    case("concat", lambda r: (f.concat([r.put("a"), r.put("b"), r.put("c")]), "abc"))
    case("concat", lambda r: (f.concat([r.put("7"), r.put("3")], " "), "7 3"))
    case("string", lambda r: (f.string('say "hi"'), 'say "hi"'))
    case("string", lambda r: (f.string('"),HYPERLINK("x'), '"),HYPERLINK("x'))
    # the reader's knobs
    for typed, want in [(3, 3), (5, 5), (6, 0), (-1, 0), (2.5, 0), ("x", 0), (None, 0)]:
        case("chosen_position", lambda r, t=typed, w=want: (f.chosen_position(r.put(t), 6), w))
    for typed, want in [(3, ""), (6, WHY), (2.5, WHY), ("x", WHY)]:
        case("position_note", lambda r, t=typed, w=want: (f.position_note(r.put(t), 6), w))
    # generation
    case("prompt_len", lambda r: (f.prompt_len(r.put("abcdefg"), 6), 6))
    case("prompt_len", lambda r: (f.prompt_len(r.put("ab"), 6), 2))
    for pos, plen, steps, prev, choice, end, target, want in gen_status_cases():
        case("gen_status", lambda r, a=(pos, plen, steps, prev, choice, end, target), w=want: (
            f.gen_status(a[0], None if a[1] is None else r.put(a[1]), r.put(a[2]), r.put(a[3]),
                         r.put(a[4]), None if a[5] is None else r.put(a[5]), r.put(a[6])), w))
    case("first_status", lambda r: (f.first_status(r.put(2)), "prompt"))
    case("first_status", lambda r: (f.first_status(r.put(0)), "unused"))
    case("start_status", lambda r: (f.start_status(), "start"))
    for status, want in [("prompt", 4), ("unused", 0), ("target", 6), ("generated", 5)]:
        case("fed_token", lambda r, s=status, w=want: (
            f.fed_token(r.put(s), r.put(4), r.put(0), r.put(5), r.put(6)), w))
    case("fed_token", lambda r: (f.fed_token(r.put("unused"), r.put(4), r.put(0), None, None),
                                 0))
    case("fed_token", lambda r: (f.fed_token(r.put("start"), None, r.put(0), None, None), 0))
    case("fed_char", lambda r: (f.fed_char(r.put("generated"), r.put("a", "b"), r.put(1)), "b"))
    case("fed_char", lambda r: (f.fed_char(r.put("unused"), r.put("a", "b"), r.put(1)), ""))
    for status, label, want in [("generated", "", "x"), ("end", "", "x"), ("prompt", "", ""),
                                ("target", "q", "p"), ("unused", "", "")]:
        case("shown_char", lambda r, s=status, lab=label, w=want: (
            f.shown_char(r.put(s), r.put("x"), r.put(lab or None), r.put("p")), w))
    # teacher forcing: target "abc" after a prompt of 2: position 1 predicts 'a'
    for pos, want in [(0, ""), (1, "a"), (2, "b"), (3, "c"), (4, "")]:
        case("label_char", lambda r, p=pos, w=want: (f.label_char(r.put("abc"), p, r.put(2)), w))
    case("label_char", lambda r: (f.label_char(r.put("abc"), 0, r.put(0)), ""))
    for pos, want in [(0, "a"), (2, "c"), (3, "")]:  # after the start token
        case("label_char", lambda r, p=pos, w=want: (f.label_char(r.put("abc"), p, None), w))
    # what teacher forcing scores of a target: max_seq 6; after a prompt of L the positions
    # L-1 .. 5 score 6 - L + 1 characters; after a start token all 6
    for target, plen, want in [
            ("abcd", 3, ""), ("abcde", 3, "the target has 5 characters; after the prompt of 3 "
                                         "characters, the 6 positions (max_seq) score only 4 "
                                         "of them"),
            ("ab", 6, "the target has 2 characters; after the prompt of 6 characters, the 6 "
                      "positions (max_seq) score only 1 of them"),
            ("abcdefg", 1, "the target has 7 characters; after the prompt of 1 character, the "
                           "6 positions (max_seq) score only 6 of them"),
            ("ab", 0, "the prompt is empty: the target is not scored"),
            (None, 0, ""), (None, 3, ""),
            ("abcdef", None, ""),
            ("abcdefgh", None, "the target has 8 characters; the 6 positions (max_seq) score "
                               "only 6 of them")]:
        case("target_note", lambda r, t=target, n=plen, w=want: (
            f.target_note(r.put(t), 6, None if n is None else r.put(n)), w))
    case("view_note", lambda r: (f.view_note(r.put("abc"), "gen", "teach"), "teach"))
    case("view_note", lambda r: (f.view_note(r.put(None), "gen", "teach"), "gen"))
    case("scored", lambda r: (f.scored(r.put("a")), 1))
    case("scored", lambda r: (f.scored(r.put(None)), 0))
    # -ln softmax([1, 2, 4])[1], with max 4 and sum e^-3 + e^-2 + 1
    s = math.exp(-3) + math.exp(-2) + 1
    case("cross_entropy", lambda r: (f.cross_entropy(r.put(1), r.put(s), r.put(4),
                                                     r.put(1, 2, 4), r.put(1)),
                                     -math.log(math.exp(-2) / s)))
    case("cross_entropy", lambda r: (f.cross_entropy(r.put(0), r.put(s), r.put(4),
                                                     r.put(1, 2, 4), r.put(1)), 0))
    case("mean_loss", lambda r: (f.mean_loss(r.put(1.5, 0, 2.5), r.put(1, 0, 1)), 2))
    case("mean_loss", lambda r: (f.mean_loss(r.put(0, 0), r.put(0, 0)), 0))
    # sampling
    # a temperature that is not a number of 0 or more reads as 0: greedy
    for t, want in [(2, 1.5), (0, 3), (-1, 3), ("hot", 3), (None, 3), ("2", 3)]:
        case("temper", lambda r, t=t, w=want: (f.temper(r.put(3), r.put(t)), w))
    greedy = "not a number of 0 or more: read as 0 (greedy)"
    for t, want in [(0.5, ""), (0, ""), (-1, greedy), ("hot", greedy), (None, greedy)]:
        case("temperature_note", lambda r, t=t, w=want: (f.temperature_note(r.put(t)), w))
    # row 3 1 3 2 of a vocabulary of 4; top-k that is not a whole number 0..4 keeps all
    for x, k, want in [(3, 1, 1), (2, 1, 0), (2, 3, 1), (1, 3, 0), (1, 0, 1), (1, 4, 1),
                       (1, 2.5, 1), (1, -1, 1), (1, 5, 1), (1, "all", 1), (1, None, 1),
                       (2, 2.0, 0)]:
        case("in_top_k", lambda r, x=x, k=k, w=want: (
            f.in_top_k(r.put(x), r.put(3, 1, 3, 2), r.put(k), 4), w))
    all_tokens = "not a whole number from 0 to 4: read as 0 (all tokens)"
    for k, want in [(0, ""), (4, ""), (2, ""), (5, all_tokens), (2.5, all_tokens),
                    (-1, all_tokens), ("all", all_tokens), (None, all_tokens)]:
        case("top_k_note", lambda r, k=k, w=want: (f.top_k_note(r.put(k), 4), w))
    case("kth_largest", lambda r: (f.kth_largest(r.put(3, 1, 4, 2), 2), 3))
    # probabilities 0.1 0.5 0.4: sorted 0.5 0.4 0.1, running sums 0.5 0.9 1
    for x, want in [(0.5, 0), (0.4, 0.5), (0.1, 0.9)]:
        case("mass_ahead", lambda r, x=x, w=want: (
            f.mass_ahead(r.put(x), r.put(0.1, 0.5, 0.4), r.put(0.5, 0.9, 1.0)), w))
    # top-p applies for 0 < p < 1; otherwise every token top-k kept stays
    for keep, ahead, p, want in [(1, 0.5, 0.6, 1), (1, 0.6, 0.6, 0), (0, 0, 0.9, 0),
                                 (1, 0.9, 1, 1), (1, 0.9, "x", 1), (1, 0.9, 0, 1)]:
        case("in_top_p", lambda r, a=(keep, ahead, p), w=want: (
            f.in_top_p(r.put(a[0]), r.put(a[1]), r.put(a[2])), w))
    for kept, p, want in [(1, 0.9, 0.25), (0, 0.9, 0), (0, 1, 0.2)]:
        case("top_p_prob", lambda r, k=kept, p=p, w=want: (
            f.top_p_prob(r.put(0.2), r.put(k), r.put(0.8), r.put(p)), w))
    nucleus_why = "not a number above 0 and at most 1: every token is kept"
    for p, want in [(0.5, ""), (1, ""), (0, nucleus_why), ("x", nucleus_why),
                    (1.5, nucleus_why)]:
        case("top_p_note", lambda r, p=p, w=want: (f.top_p_note(r.put(p)), w))
    case("kept_exp", lambda r: (f.kept_exp(r.put(1), r.put(1), r.put(3)), math.exp(-2)))
    case("kept_exp", lambda r: (f.kept_exp(r.put(0), r.put(1), r.put(3)), 0))
    case("at_most", lambda r: (f.at_most(r.put(0.3), r.put(0.3)), 1))
    case("at_most", lambda r: (f.at_most(r.put(0.31), r.put(0.3)), 0))
    case("sample_or_argmax", lambda r: (f.sample_or_argmax(r.put(1), r.put(1, 1, 0), 3, "9"),
                                        2))
    case("sample_or_argmax", lambda r: (f.sample_or_argmax(r.put(1), r.put(1, 1, 1), 3, "9"),
                                        2))  # rounding past the last token
    for t in (0, -1, "hot", None):  # greedy: the argmax
        case("sample_or_argmax", lambda r, t=t: (
            f.sample_or_argmax(r.put(t), r.put(1, 1, 0), 3, "9"), 9))
    return c


CASES = cases()
NOT_EMITTERS = {"functions_in", "prepare", "block_rows"}  # tooling, tested in test_formulas


def emitters() -> set[str]:
    return {name for name, fn in inspect.getmembers(f, inspect.isfunction)
            if fn.__module__ == f.__name__ and not name.startswith("_")} - NOT_EMITTERS


def test_every_emitter_has_a_case():
    assert emitters() - {name for name, _ in CASES} == set()


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The workbook of every case, and each case's expected value by row."""
    wb = openpyxl.Workbook()
    ws = wb.active
    wants, Row.columns = {}, FIRST_INPUT_COLUMN
    for row, (_, make) in enumerate(CASES, start=1):
        body, want = make(Row(ws, row))
        ws.cell(row, 1, f.prepare(body))
        wants[row] = want
    path = tmp_path_factory.mktemp("formulas") / "formulas.xlsx"
    wb.save(path)
    return {"formulas": path}, wants


@pytest.fixture(scope="module")
def recomputed(book, tmp_path_factory):
    return lazy_recalc(book[0], tmp_path_factory)


@pytest.mark.parametrize("engine", recalc.ENGINES)
def test_every_emitter_computes_its_value(engine, book, recomputed):
    ws = open_values(recomputed(engine)["formulas"]).active
    wrong = []
    for row, want in book[1].items():
        got = ws.cell(row, 1).value
        got = "" if got is None else got
        if isinstance(want, str):
            ok = got == want
        else:
            ok = isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-12,
                                                                abs_tol=1e-14)
        if not ok:
            name = CASES[row - 1][0]
            wrong.append(f"row {row} {name}: {ws.cell(row, 1).value!r}, want {want!r}")
    assert not wrong, "\n".join(wrong)
