"""Formula text: small pure functions from cell references to formula strings.

Each model operation has its formula written here and nowhere else. Every function a
formula may call is on FUNCTIONS, the single allow-list: all of them compute the same
value in Excel 2010+, LibreOffice, Gnumeric and Google Sheets when given plain cell
ranges. Nothing here needs array evaluation: a per-cell MMULT of a row by a column
is a 1x1 result, and SUMPRODUCT only ever multiplies two ranges of the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import limits

# Function -> True when Excel added it after 2007 and the file needs the _xlfn. prefix.
FUNCTIONS: dict[str, bool] = {
    "AND": False, "AVERAGE": False, "COS": False, "EXACT": False, "EXP": False, "IF": False,
    "IFERROR": False, "INDEX": False, "INT": False, "ISNUMBER": False, "LARGE": False, "LEN": False,
    "MATCH": False, "MAX": False, "MID": False, "MIN": False, "MMULT": False, "MOD": False,
    "OR": False, "PI": False, "RANK": False, "LN": False,
    "POWER": False, "SIN": False, "SQRT": False, "SUM": False, "SUMPRODUCT": False,
    "TANH": False, "VARP": False,
}

_CALL = re.compile(r"(?<![A-Za-z0-9_.])([A-Z][A-Z0-9.]*)\(")


def functions_in(formula: str) -> set[str]:
    """Names of the functions a formula calls (string literals excluded)."""
    code = re.sub(r'"[^"]*"', '""', formula)
    return {name.removeprefix("_xlfn.") for name in _CALL.findall(code)}


def prepare(body: str) -> str:
    """The formula as stored in the file: '=' and _xlfn. prefixes; rejects unlisted functions."""
    used = functions_in(body)
    unknown = used - FUNCTIONS.keys()
    if unknown:
        raise ValueError(f"formula uses functions outside the allow-list: {sorted(unknown)}")
    for name in sorted(n for n in used if FUNCTIONS[n]):
        body = re.sub(rf"(?<![A-Za-z0-9_.]){name}\(", f"_xlfn.{name}(", body)
    limits.check_formula("=" + body)
    return "=" + body


def block_rows(body: Callable[[int, int], str], ncols: int) -> Callable[[int], list[str]]:
    """The prepared formulas of a block's row i, made when the writer reaches it.

    Every cell of a block comes from the same formula function, so the allow-list and
    _xlfn. prefixes that `prepare` checks on sample cells while planning (see
    `_Builder.fill`) hold for all of them; Excel's limits are checked on every cell.
    Should a function ever need its prefix, every cell goes through `prepare`."""
    if any(FUNCTIONS.values()):
        return lambda i: [prepare(body(i, j)) for j in range(ncols)]

    check, columns = limits.check_formula, range(ncols)

    def row(i: int) -> list[str]:
        out = ["=" + body(i, j) for j in columns]
        for formula in out:
            check(formula)
        return out

    return row


def string(text: str) -> str:
    """A text constant inside a formula; doubled quotes, so no text can end it early."""
    return '"' + text.replace('"', '""') + '"'


# --- input ------------------------------------------------------------------

def char_at(text: str, pos: int, pad: str) -> str:
    """The character at 0-based `pos`, or the padding token past the end."""
    return f"IF({pos + 1}>LEN({text}),{pad},MID({text},{pos + 1},1))"


def one_hot(char: str, token: str) -> str:
    """1 where the character is exactly this token. EXACT is case-sensitive; MATCH is not."""
    return f"IF(EXACT({char},{token}),1,0)"


def token_id(one_hot_row: str, pad_id: str) -> str:
    """0-based id of the token marked in the one-hot row; unknown characters read as padding."""
    return f"IFERROR(MATCH(1,{one_hot_row},0)-1,{pad_id})"


def input_note(text: str, pos: int, one_hot_row: str) -> str:
    unknown = string("not in vocabulary: read as padding")
    return (f'IF({pos + 1}>LEN({text}),{string("padding")},'
            f'IF(SUM({one_hot_row})=0,{unknown},""))')


def typed_id(cell: str, size: int, pad_id: str) -> str:
    """A typed token id if it is one (a whole number 0..size-1), else the padding id."""
    return _when_typed(cell, _whole_in(cell, size - 1), cell, pad_id)


def typed_note(cell: str, size: int) -> str:
    """Why a typed id reads as padding: the cell is empty, or not a token id."""
    bad = string(f"not a token id 0 to {size - 1}: read as padding")
    return (f'IF(ISNUMBER({cell}),IF({_whole_in(cell, size - 1)},"",{bad}),'
            f'IF({cell}="",{string("padding")},{bad}))')


def lookup(table: str, row_id: str, col: int) -> str:
    """Entry `col` (0-based) of the table row for a 0-based id."""
    return f"INDEX({table},{row_id}+1,{col + 1})"


def _characters(n: str) -> str:
    """'3 characters', '1 character': a count of characters as text."""
    return f'{n}&IF({n}=1," character"," characters")'


def length_note(text: str, max_seq: int, pad: str, shows_padding: bool) -> str:
    """What the model reads of the typed text: a longer text is cut to the first max_seq
    characters; past a shorter one, positions read the padding token, and a model whose
    output follows its input positions (`shows_padding`) may show it in the output."""
    n, last = f"LEN({text})", max_seq - 1
    cut = (f'"the input has "&{n}&" characters; only the first {max_seq} are read '
           f'(max_seq)"')
    where = (f'IF({n}={last},"; position {last} reads",'
             f'"; positions "&{n}&" to {last} read")')
    why = (" (the model reads it like any character, so it can show in the output)"
           if shows_padding else "")
    padded = (f'"the input has "&{_characters(n)}&{where}&" the padding token \'"&{pad}&"\'"'
              + (f"&{string(why)}" if why else ""))
    return f'IF({n}>{max_seq},{cut},IF({n}<{max_seq},{padded},""))'


def source_note(text: str, max_seq: int, pad: str, steps: str) -> str:
    """An encoder-decoder's source: what `length_note` says, and, for a source longer than
    the `steps` tokens the decoder may generate, that it stops there (copy's decoder
    writes 7 tokens, so an 8-character source comes out 7 characters long)."""
    n = f"LEN({text})"
    more = (f'IF({n}={max_seq},"the input has "&{n}&" characters","")&"; the decoder '
            f'generates at most "&{steps}&" tokens (generate.steps)"')
    return f'{length_note(text, max_seq, pad, False)}&IF({n}>{steps},{more},"")'


def prompt_note(text: str, max_seq: int, steps: str) -> str:
    """What a generating decoder makes of its prompt: nothing to generate from (empty),
    cut to max_seq positions (then none is left to generate), or room for fewer tokens
    than `steps` in the positions after it."""
    n, T = f"LEN({text})", max_seq
    return (f'IF({n}=0,"the prompt is empty: nothing is generated",'
            f'IF({n}>{T},"the prompt has "&{n}&" characters; only the first {T} are read '
            f'(max_seq), so no position is left to generate",'
            f'IF({n}={T},"the prompt fills all {T} positions (max_seq): none is left to '
            f'generate",IF({n}+{steps}>{T},"the prompt has "&{_characters(n)}&"; the {T} '
            f'positions (max_seq) leave room for "&({T}-{n})&" of the "&{steps}&" steps",'
            f'""))))')


# --- positions ----------------------------------------------------------------

def sinusoid(pos: int, dim: int, d_model: int) -> str:
    """sin for even dimensions, cos for odd ones, as in 'Attention is all you need'."""
    fn = "SIN" if dim % 2 == 0 else "COS"
    return f"{fn}({pos}/POWER(10000,2*{dim // 2}/{d_model}))"


def code_bit(code: int, bit_from_top: int, bits: int) -> str:
    """+1 or -1: bit `bit_from_top` (0 = most significant) of the position's code."""
    return f"2*MOD(INT({code}/2^{bits - 1 - bit_from_top}),2)-1"


# --- arithmetic ------------------------------------------------------------------

def copy(target: str) -> str:
    """A value shown again where it is used, e.g. a learned position row."""
    return target


def add(a: str, b: str) -> str:
    return f"{a}+{b}"


def with_bias(body: str, bias: str | None) -> str:
    return body if bias is None else f"{body}+{bias}"


def linear(row: str, column: str, bias: str | None) -> str:
    """One output of x @ W + b: the input row times one weight column, a 1x1 MMULT."""
    return with_bias(f"MMULT({row},{column})", bias)


def dot(a: str, b: str) -> str:
    """Dot product of two ranges of the same shape (two rows)."""
    return f"SUMPRODUCT({a},{b})"


def scaled_dot(a: str, b: str, scale: str | None) -> str:
    return dot(a, b) if scale is None else f"{dot(a, b)}*{scale}"


def bilinear(xw_row: str, x_row: str, bias: str | None, scale: str | None) -> str:
    """One score of the pairwise view: (x_i W_QK) . x_j, plus the bias column's part."""
    body = with_bias(dot(xw_row, x_row), bias)
    if scale is None:
        return body
    return f"({body})*{scale}" if bias is not None else f"{body}*{scale}"


def inv_sqrt(n: str) -> str:
    return f"1/SQRT({n})"


# --- softmax, in visible steps -----------------------------------------------------

def row_max(row: str) -> str:
    return f"MAX({row})"


def exp_shifted(x: str, row_max_ref: str) -> str:
    """exp(x - max): never above 1, so EXP cannot overflow whatever the scores."""
    return f"EXP({x}-{row_max_ref})"


def zero() -> str:
    """A cell zero by construction: an entry the causal mask hides (so its weight is
    exactly 0), or a dimension that a binary position code leaves empty."""
    return "0"


def row_sum(row: str) -> str:
    return f"SUM({row})"


def divide(a: str, b: str) -> str:
    return f"{a}/{b}"


# --- layer norm ------------------------------------------------------------------------

def mean(row: str) -> str:
    return f"AVERAGE({row})"


def variance(row: str) -> str:
    """Population variance, as LayerNorm uses (VARP is the pre-2010 name of VAR.P)."""
    return f"VARP({row})"


def rstd(var: str, eps: str) -> str:
    return f"1/SQRT({var}+{eps})"


def normalize(x: str, mean_ref: str, rstd_ref: str, gain: str, bias: str) -> str:
    return f"({x}-{mean_ref})*{rstd_ref}*{gain}+{bias}"


# --- activations ------------------------------------------------------------------------

def gelu(x: str) -> str:
    """GELU in its tanh form, as GPT-2."""
    return f"0.5*{x}*(1+TANH(SQRT(2/PI())*({x}+0.044715*{x}^3)))"


def relu(x: str) -> str:
    return f"MAX(0,{x})"


# --- decoding ----------------------------------------------------------------------------

def argmax(row: str, row_max_ref: str) -> str:
    """0-based index of the first largest entry, as numpy.argmax."""
    return f"MATCH({row_max_ref},{row},0)-1"


def token_text(vocab_row: str, token: str) -> str:
    return f"INDEX({vocab_row},1,{token}+1)"


def token_in_column(vocab_column: str, token: str) -> str:
    """The token of an id in a vocabulary that runs down a column."""
    return f"INDEX({vocab_column},{token}+1,1)"


def labelled(index: int, text: str) -> str:
    """A column label that follows the input: an index and the text at it, e.g. "2 t"."""
    return f'"{index} "&{text}'


def concat(parts: list[str], sep: str = "") -> str:
    """Texts joined, with `sep` between them."""
    return ("&" + string(sep) + "&" if sep else "&").join(parts)


# --- the reader's knobs ---------------------------------------------------------------------

def _whole_in(cell: str, high: int) -> str:
    return f"AND({cell}>=0,{cell}<={high},{cell}=INT({cell}))"


def _when_typed(cell: str, test: str, then: str, otherwise: str) -> str:
    """`then` when a cell a user types into holds a number that passes `test`, else
    `otherwise` (text, an empty cell, a number that fails): never an error value, since
    `test` is only computed on a number."""
    return f"IF(ISNUMBER({cell}),IF({test},{then},{otherwise}),{otherwise})"


def chosen_position(cell: str, max_seq: int) -> str:
    """The typed position if it is one (a whole number 0..max_seq-1), else 0: never an error."""
    return _when_typed(cell, _whole_in(cell, max_seq - 1), cell, "0")


def position_note(cell: str, max_seq: int) -> str:
    """Says why a typed position was not used; empty when it was."""
    why = f"is not a whole number from 0 to {max_seq - 1}: showing position 0"
    return _when_typed(cell, _whole_in(cell, max_seq - 1), '""', f'"{why}"')


# --- generation: each position's input is the token chosen at the one before ---------

def prompt_len(text: str, max_seq: int) -> str:
    """How many positions the prompt fills."""
    return f"MIN(LEN({text}),{max_seq})"


def gen_status(pos: int, prompt_len: str | None, steps: str, prev_status: str,
               prev_choice: str, end_id: str | None, target: str) -> str:
    """What position `pos` (>= 1) holds: "prompt", "generated", "end" or "unused".

    A position is generated while fewer than `steps` tokens have been and the token
    before it was not the end token; `prompt_len` None means a one-token prompt (the
    start token of an encoder-decoder's decoder)."""
    body = '"generated"' if end_id is None else f'IF({prev_choice}={end_id},"end","generated")'
    body = f'IF(OR({prev_status}="unused",{prev_status}="end"),"unused",{body})'
    L = "1" if prompt_len is None else prompt_len
    teacher = f'IF({pos}-{L}<LEN({target})-1,"target","unused")'
    if prompt_len is None:
        return f'IF(LEN({target})>0,{teacher},IF({pos}>{steps},"unused",{body}))'
    return (f'IF({pos}<{L},"prompt",IF(LEN({target})>0,IF({L}=0,"unused",{teacher}),'
            f'IF({pos}>={L}+{steps},"unused",{body})))')


def first_status(prompt_len: str) -> str:
    """Position 0 of a decoder-only model: the prompt's first token, or unused if empty."""
    return f'IF({prompt_len}>0,"prompt","unused")'


def start_status() -> str:
    return '"start"'


def fed_token(status: str, prompt_id: str | None, pad_id: str, prev_choice: str | None,
              prev_label: str | None) -> str:
    """The token a position reads: the prompt's, padding when unused, the previous
    position's label under teacher forcing, else the previous position's choice."""
    body = pad_id if prev_choice is None else (
        f'IF({status}="unused",{pad_id},IF({status}="target",{prev_label},{prev_choice}))')
    return body if prompt_id is None else f'IF({status}="prompt",{prompt_id},{body})'


def fed_char(status: str, vocab_row: str, token: str) -> str:
    return f'IF({status}="unused","",{token_text(vocab_row, token)})'


def shown_char(status: str, char: str, label: str, predicted: str) -> str:
    """A position's part of output_text: the token it was fed if generated (end token
    included), under teacher forcing what the model predicts where it is scored."""
    return f'IF(OR({status}="generated",{status}="end"),{char},"")&IF({label}="","",{predicted})'


# --- teacher forcing ------------------------------------------------------------------

def label_char(target: str, pos: int, prompt_len: str | None) -> str:
    """The target character position `pos` is scored against: target[pos - L + 1], with
    L the prompt's length (None: the one start token)."""
    if prompt_len is None:
        return f'IF({pos}>=LEN({target}),"",MID({target},{pos + 1},1))'
    L = prompt_len
    return (f'IF({L}=0,"",IF({pos}+1<{L},"",'
            f'IF({pos}-{L}+1>=LEN({target}),"",MID({target},{pos}-{L}+2,1))))')


def target_note(target: str, max_seq: int, prompt_len: str | None) -> str:
    """What teacher forcing scores of a typed target: position p is scored against
    target[p - L + 1] (see label_char), so the positions from the prompt's last one to
    max_seq - 1 score at most max_seq - L + 1 characters (max_seq after the start token,
    `prompt_len` None); an empty prompt scores none. Empty when the whole target is
    scored, or no target is typed."""
    n, T = f"LEN({target})", max_seq
    if prompt_len is None:
        return (f'IF({n}>{T},"the target has "&{n}&" characters; the {T} positions '
                f'(max_seq) score only {T} of them","")')
    L = prompt_len
    room = f"({T}-{L}+1)"
    cut = (f'"the target has "&{n}&" characters; after the prompt of "&{_characters(L)}'
           f'&", the {T} positions (max_seq) score only "&{room}&" of them"')
    return (f'IF({n}=0,"",IF({L}=0,"the prompt is empty: the target is not scored",'
            f'IF({n}>{room},{cut},"")))')


def view_note(target: str, generating: str, teaching: str) -> str:
    """Which view the sheet shows: teacher forcing when a target is typed."""
    return f"IF(LEN({target})>0,{string(teaching)},{string(generating)})"


def scored(label: str) -> str:
    return f'IF({label}="",0,1)'


def cross_entropy(scored_ref: str, row_sum_ref: str, row_max_ref: str, row: str,
                  label_id: str) -> str:
    """-ln p(label) as log-softmax, ln(sum) + (max - x[label]): finite where p underflows.
    max - x first: it is exact (0 when the label is the argmax), so a small loss keeps its
    digits next to logits in the tens of thousands (copy's), which ln(sum) + max would
    round to the last place of max."""
    return (f"IF({scored_ref}=1,LN({row_sum_ref})+({row_max_ref}"
            f"-INDEX({row},1,{label_id}+1)),0)")


def mean_loss(losses: str, scored_col: str) -> str:
    return f"SUM({losses})/MAX(1,SUM({scored_col}))"


# --- sampling -------------------------------------------------------------------------

def _sampling_at(temperature: str, then: str, greedy: str) -> str:
    """`then` at a typed temperature above 0; `greedy` at 0 and for anything that is not
    a number of 0 or more (text, an empty cell, a negative number), read as 0."""
    return _when_typed(temperature, f"{temperature}>0", then, greedy)


def temper(logit: str, temperature: str) -> str:
    """logit / temperature; a temperature of 0 (greedy) leaves the logit as it is."""
    return _sampling_at(temperature, f"{logit}/{temperature}", logit)


def temperature_note(temperature: str) -> str:
    """Why a typed temperature is read as 0; empty when it is a number of 0 or more."""
    why = string("not a number of 0 or more: read as 0 (greedy)")
    return _when_typed(temperature, f"{temperature}>=0", '""', why)


def in_top_k(x: str, row: str, k: str, size: int) -> str:
    """1 if fewer than k entries of the row are larger than x. A top-k that is not a whole
    number from 1 to `size` (the vocabulary's) keeps every entry: 0, and whatever is
    read as 0 (text, an empty cell, a fraction, a number out of range)."""
    return _when_typed(k, f"AND({k}>=1,{k}<={size},{k}=INT({k}))",
                       f"IF(RANK({x},{row})<={k},1,0)", "1")


def top_k_note(k: str, size: int) -> str:
    """Why a typed top-k is read as 0 (all tokens); empty when it is a whole number
    from 0 to `size`."""
    why = string(f"not a whole number from 0 to {size}: read as 0 (all tokens)")
    return _when_typed(k, _whole_in(k, size), '""', why)


def kth_largest(row: str, k: int) -> str:
    """The row's k-th largest entry (k from 1): the row sorted high to low, cell by cell."""
    return f"LARGE({row},{k})"


def mass_ahead(x: str, row: str, sorted_cum_row: str) -> str:
    """The sum of the row's entries strictly larger than x: RANK(x) - 1 of them, so the
    cumulative sum of the sorted row just before x's place (0 for the largest). Not
    SUMIF(row, ">"&x, row): the criterion turns x into text, rounded to 15 digits."""
    rank = f"RANK({x},{row})"
    return f"IF({rank}=1,0,INDEX({sorted_cum_row},1,{rank}-1))"


def _top_p_valid(p: str, then: str, otherwise: str, high: str = "<1") -> str:
    return _when_typed(p, f"AND({p}>0,{p}{high})", then, otherwise)


def in_top_p(keep: str, ahead: str, p: str) -> str:
    """1 if top-k kept the token and the mass ahead of it is below p; top-p applies when
    p is a number above 0 and below 1, otherwise it keeps every token top-k keeps."""
    return f"IF({keep}=1,{_top_p_valid(p, f'IF({ahead}<{p},1,0)', '1')},0)"


def top_p_prob(x: str, kept: str, mass: str, p: str) -> str:
    """A kept token's probability renormalised over the kept mass; unchanged (x) when
    top-p does not apply."""
    return _top_p_valid(p, f"IF({kept}=1,{x}/{mass},0)", x)


def top_p_note(p: str) -> str:
    """Why a typed top-p is not used; empty when it is (any number above 0, at most 1)."""
    why = string("not a number above 0 and at most 1: every token is kept")
    return _top_p_valid(p, '""', why, high="<=1")


def kept_exp(keep: str, x: str, row_max_ref: str) -> str:
    return f"IF({keep}=1,{exp_shifted(x, row_max_ref)},0)"


def at_most(x: str, u: str) -> str:
    return f"IF({x}<={u},1,0)"


def sample_or_argmax(temperature: str, below_row: str, n: int, argmax_body: str) -> str:
    """Inverse-CDF sampling: the first token whose cumulative probability exceeds the
    uniform u is the number of cumulative entries <= u (at most the last token, for
    rounding). A temperature of 0 (or read as 0) takes the argmax instead."""
    return _sampling_at(temperature, f"MIN(SUM({below_row}),{n - 1})", argmax_body)
