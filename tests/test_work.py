"""The static work count: references parsed from a table of cases, a small model counted
block by block against a hand count from the layout rules, and its multiply-adds."""

import pytest

from xlformer import builder, work
from xlformer.book import FORMULA, NUMBER, TEXT, Book, Cell
from xlformer.layout import Area
from xlformer.spec import parse_spec
from xlformer.weights import make_weights

NAMES = {"wte": Area("Weights", 10, 3, 5, 4), "ln_eps": Area("Weights", 4, 3, 1, 1)}

# formula -> cells covered by each reference, in order
REFERENCES = [
    ("=C5", [1]),
    ("=$C$3", [1]),
    ("=C$3+$C3", [1, 1]),
    ("=Layer0!C5:F5", [4]),
    ("=SUM(Layer0!$C$5:$F$8)", [16]),
    ("=MMULT(Layer0!C5:F5,Weights!$C$10:$C$13)+Weights!$G$3", [4, 4, 1]),
    ("='Layer 0'!B2:C3*2", [4]),
    ("='It''s'!A1", [1]),
    ("=Layer0!A1:Layer0!B2", [4]),
    ("=F5:C5", [4]),  # corners in either order
    ("=XFD1048576", [1]),
    ("=SUM(C:E)", [3 * 1_048_576]),
    ("=SUM($3:$4)", [2 * 16_384]),
    # not references: functions that look like cells, numbers, text, unknown words
    ("=LOG10(A1)", [1]),
    ("=_xlfn.VAR.P(A1:A3)", [3]),
    ("=1E-05+B2", [1]),
    ("=2^3+0.044715", []),
    ('=IF(A1="B2:C9",C3,"")', [1, 1]),
    ('="say ""D4"""&E5', [1]),
    ("=IF(TRUE,PI(),0)", []),
    ("=XFE1", []),  # past the last column
    ("=A0", []),  # no row 0
    # defined names, case-insensitive; words that are not names read nothing
    ("=INDEX(wte,2,3)", [1]),  # INDEX returns one cell of its table
    ("=INDEX(Weights!$C$10:$F$14,C12+1,3)+SUM(wte)", [1, 1, 20]),
    ("=INDEX(A1:B9,1,1)+XINDEX(A1:B9)", [1, 18]),  # only INDEX itself
    ("=1/SQRT(C3+LN_EPS)", [1, 1]),
    ("=h.0.ln_1+x", []),
]


@pytest.mark.parametrize(("formula", "want"), REFERENCES)
def test_references(formula, want):
    assert list(work.references(formula, NAMES)) == want
    assert work.cells_read(formula, NAMES) == sum(want)


def test_count_reads_only_formulas_and_every_sheet():
    book = Book()
    a, b = book.sheet("A"), book.sheet("B")
    a.put(1, 1, Cell(NUMBER, 2.0))
    a.put(1, 2, Cell(FORMULA, "=A1*2"))  # 1
    a.put(2, 1, Cell(FORMULA, "=SUM(A1:B1)+B!$C$3"))  # 2 + 1
    a.put(3, 1, Cell(TEXT, "=A1:Z99"))  # text is data, not a formula
    book.name("w", Area("B", 1, 1, 3, 2))
    b.put(1, 1, Cell(FORMULA, "=SUM(w)*w"))  # 6 + 6
    assert work.count(book) == work.Work(formulas=3, reads=1 + 3 + 12)


SMALL = """
name = "small"
[vocab]
tokens = ["a", "b", "c"]
[model]
max_seq = 3
d_model = 4
n_head = 2
n_layer = 1
d_ff = 8
[weights]
source = "random"
"""
# pre-norm, learned positions, causal, scaled, biases, head tied to wte (the defaults)
T, V, D, H, HS, DA, FF = 3, 3, 4, 2, 2, 4, 8
CAUSAL = T * (T + 1) // 2  # entries (i, j) with j <= i


def hand_count() -> dict[str, tuple[int, int]]:
    """Block -> (formula cells, cells read), by hand from the layout rules."""
    ln = {".mean": (T, T * D), ".var": (T, T * D),  # AVERAGE / VARP of a row of D
          ".rstd": (T, T * 2),  # 1/SQRT(var+eps)
          "": (T * D, T * D * 5)}  # (x-mean)*rstd*gain+bias
    count = {
        "input.onehot": (T * V, T * V * 2),  # IF(EXACT(char, token),1,0)
        "input.ids": (T, T * (V + 1)),  # IFERROR(MATCH(1, one-hot row of V)-1, pad_id)
        "tok_emb": (T * D, T * D * 2),  # INDEX(wte, id+1, j): one entry, and the id
        "pos_emb": (T * D, T * D),  # a copy of wpe
        "embed": (T * D, T * D * 2),
        "h.0.attn.c_attn": (T * 3 * DA, T * 3 * DA * (2 * D + 1)),  # MMULT(row, col) + bias
        # MMULT(weights row, v column), both cut at 0..i by the causal mask
        "h.0.attn.heads": (T * DA, DA * 2 * CAUSAL),
        "h.0.attn.c_proj": (T * D, T * D * (2 * DA + 1)),
        "h.0.resid_attn": (T * D, T * D * 2),
        "h.0.mlp.c_fc": (T * FF, T * FF * (2 * D + 1)),
        "h.0.mlp.act": (T * FF, T * FF * 3),  # GELU's tanh form names x three times
        "h.0.mlp.c_proj": (T * D, T * D * (2 * FF + 1)),
        "h.0.resid_mlp": (T * D, T * D * 2),
        "logits": (T * V, T * V * 2 * D),  # SUMPRODUCT(x row, wte row): tied, no bias
        "probs.max": (T, T * V),
        "probs.exp": (T * V, T * V * 2),  # EXP(logit - max)
        "probs.sum": (T, T * V),
        "probs": (T * V, T * V * 2),
        "output.ids": (T, T * (V + 1)),  # MATCH(max, logits row)
    }
    for name in ("h.0.ln_1", "h.0.ln_2", "ln_f"):
        count.update({name + part: work_ for part, work_ in ln.items()})
    for h in range(H):
        head = f"h.0.attn.head{h}"
        count.update({
            **{f"{head}.{part}": (T * HS, T * HS * (2 * D + 1)) for part in "qkv"},
            # SUMPRODUCT(q, k) * scale; a masked score is the constant 0
            f"{head}.scores": (T * T, CAUSAL * (2 * HS + 1)),
            f"{head}.max": (T, CAUSAL),  # row i reads keys 0..i
            f"{head}.exp": (T * T, CAUSAL * 2),  # masked entries are the constant 0
            f"{head}.sum": (T, T * T),
            f"{head}.weights": (T * T, T * T * 2),
            f"{head}.out": (T * HS, HS * 2 * CAUSAL),
            # the pairwise view, with the bias as an extra row and column (D + 1):
            # W_QK entries are SUMPRODUCTs of a W_Q row and a W_K row of HS
            f"{head}.w_qk": ((D + 1) ** 2, (D + 1) ** 2 * 2 * HS),
            # X . W_QK: MMULT(x row, column of D) + the bias row's entry
            f"{head}.x_wqk": (T * (D + 1), T * (D + 1) * (2 * D + 1)),
            # SUMPRODUCT(x W_QK row, x row) + bias column, * scale; masked ones are 0
            f"{head}.scores_qk": (T * T, CAUSAL * (2 * D + 2)),
        })
    return count


def test_small_model_block_by_block():
    spec = parse_spec(SMALL)
    book = builder.build(spec, make_weights(spec), "ab")
    got = {name: (w.formulas, w.reads) for name, w in work.by_block(book).items()}
    assert got == hand_count()
    assert work.count(book).formulas == book.counts()[1]


def test_small_model_multiply_adds():
    assert work.macs(parse_spec(SMALL)) == {
        "embeddings": 0,
        "qkv": T * D * 3 * DA,  # 144
        "scores": H * CAUSAL * HS,  # 24: (i, j) with j <= i only
        "weighted sums": H * CAUSAL * HS,  # 24
        "attn proj": T * DA * D,  # 48
        "cross": 0,
        "mlp": T * (D * FF + FF * D),  # 192
        "logits": T * D * V,  # 36
        "total": 144 + 24 + 24 + 48 + 192 + 36,
    }


def test_encoder_decoder_multiply_adds():
    spec = parse_spec(SMALL.replace("n_layer = 1", "n_layer = 1\nn_enc_layer = 1") + """
[target_vocab]
tokens = ["^", "$", "x", "y"]
pad = "$"
[generate]
start = "^"
end = "$"
steps = 2
""")
    assert work.macs(spec) == {
        "embeddings": 0,
        "qkv": 2 * T * D * 3 * DA,  # 288: encoder and decoder block
        # the decoder's causal (i, j) pairs, the encoder's all: 4 * (6 + 9)
        "scores": H * HS * (CAUSAL + T * T),  # 60
        "weighted sums": H * HS * (CAUSAL + T * T),  # 60
        "attn proj": 2 * T * DA * D,  # 96
        # q 48, k and v 96, scores 36 and sums 36 over all source positions, proj 48
        "cross": 48 + 96 + 36 + 36 + 48,
        "mlp": 2 * T * (D * FF + FF * D),  # 384
        "logits": T * D * 4,  # 48: the decoder's head, over its 4 target tokens
        "total": 288 + 60 + 60 + 96 + 264 + 384 + 48,
    }


def test_no_mlp_no_multiply_adds_there():
    spec = parse_spec(SMALL.replace("d_ff = 8", "mlp = false"))
    assert work.macs(spec)["mlp"] == 0
