"""How much work a workbook asks of a spreadsheet engine, counted statically.

Two numbers from the built Book, one from the spec, so they can be put side by side:
- formula cells, and the cells they read: every reference in every formula counts
  the cells it covers (`Layer0!C5:F5` = 4, `$C$3` = 1, a defined name = its area), once
  per occurrence, so GELU's `x` read three times counts 3. The table that INDEX picks
  from counts 1, the one cell it returns (a token's embedding looks up one entry of
  `wte`, however large the vocabulary); MATCH counts the whole range it searches;
- the model's multiply-adds for the same forward pass (`macs`): the products of
  matrices and vectors, the only terms that grow as d_model squared or with the
  vocabulary. Lookups, additions, LayerNorm, softmax and activations are not counted.

A matrix product as the workbook writes it, one MMULT of a row of n by a column of n per
output, reads 2n cells for n multiply-adds; the ratio of reads to multiply-adds is
therefore about 2 where the work is in the products, and larger where it is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .a1 import MAX_COLS, MAX_ROWS
from .book import FORMULA, Book
from .layout import Area
from .spec import Spec

_STRING = re.compile(r'"(?:[^"]|"")*"')
_SHEET = r"(?:'(?:[^']|'')+'|[A-Za-z_][A-Za-z0-9_.]*)!"
_COL, _ROW = r"\$?[A-Z]{1,3}", r"\$?[0-9]+"
# A reference stands alone: not inside a name or number, not a function call.
_BEFORE, _AFTER = r"(?<![A-Za-z0-9_.$'!])", r"(?![A-Za-z0-9_.(!])"
_REFERENCE = re.compile(
    rf"{_BEFORE}(?:{_SHEET})?(?:"
    rf"(?P<c1>{_COL})(?P<r1>{_ROW})(?::(?:{_SHEET})?(?P<c2>{_COL})(?P<r2>{_ROW}))?"
    rf"|(?P<cc1>{_COL}):(?P<cc2>{_COL})"  # whole columns, C:E
    rf"|(?P<rr1>{_ROW}):(?P<rr2>{_ROW})"  # whole rows, 3:5
    rf"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"  # a defined name, if the book has it
    rf"){_AFTER}")
_INDEXED = re.compile(r"(?<![A-Za-z0-9_.])INDEX\($")  # the reference is INDEX's table


@dataclass(frozen=True)
class Work:
    formulas: int  # formula cells
    reads: int  # cells read, summed over every reference of every formula

    def __add__(self, other: Work) -> Work:
        return Work(self.formulas + other.formulas, self.reads + other.reads)


def _col(letters: str) -> int:
    n = 0
    for ch in letters.lstrip("$"):
        n = n * 26 + ord(ch) - 64
    return n


def _row(digits: str) -> int:
    return int(digits.lstrip("$"))


def references(formula: str, names: Mapping[str, Area] | None = None) -> Iterator[int]:
    """The number of cells each reference in `formula` covers, in order of appearance.

    Text inside string literals is skipped; INDEX's table counts 1. A bare word counts
    only if it is one of `names` (defined names, case-insensitive as in Excel);
    otherwise it is a function argument like TRUE and reads nothing.
    """
    return _references(formula, _sizes(names or {}))


def _sizes(names: Mapping[str, Area]) -> dict[str, int]:
    """Defined names, upper-cased, -> cells they cover: made once per book, not per formula."""
    return {k.upper(): a.nrows * a.ncols for k, a in names.items()}


def _references(formula: str, known: dict[str, int]) -> Iterator[int]:
    code = _STRING.sub('""', formula)
    for m in _REFERENCE.finditer(code):
        if _INDEXED.search(code, 0, m.start()):
            yield 1
        elif m["c1"]:
            c1, r1 = _col(m["c1"]), _row(m["r1"])
            c2, r2 = (_col(m["c2"]), _row(m["r2"])) if m["c2"] else (c1, r1)
            if max(c1, c2) <= MAX_COLS and 1 <= min(r1, r2) and max(r1, r2) <= MAX_ROWS:
                yield (abs(r2 - r1) + 1) * (abs(c2 - c1) + 1)
        elif m["cc1"]:
            yield (abs(_col(m["cc2"]) - _col(m["cc1"])) + 1) * MAX_ROWS
        elif m["rr1"]:
            yield (abs(_row(m["rr2"]) - _row(m["rr1"])) + 1) * MAX_COLS
        elif m["name"].upper() in known:
            yield known[m["name"].upper()]


def cells_read(formula: str, names: Mapping[str, Area] | None = None) -> int:
    """Total cells that `formula`'s references cover."""
    return sum(references(formula, names))


def count(book: Book) -> Work:
    """Formula cells of the whole book, and the cells they read."""
    total, known = Work(0, 0), _sizes(book.names)
    for formula in book.formulas():
        total += Work(1, sum(_references(formula, known)))
    return total


def by_block(book: Book) -> dict[str, Work]:
    """The same count inside each computed block (a head's q is a window of c_attn,
    so windows and the blocks they lie in both count their cells)."""
    out, known = {}, _sizes(book.names)
    cells = {name: dict(sheet.items(FORMULA)) for name, sheet in book.sheets.items()}
    for name, area in book.blocks.items():
        work = Work(0, 0)
        for i in range(area.nrows):
            for j in range(area.ncols):
                cell = cells[area.sheet].get(area.at(i, j))
                if cell is not None:
                    work += Work(1, sum(_references(str(cell.value), known)))
        out[name] = work
    return out


def macs(spec: Spec) -> dict[str, int]:
    """Multiply-adds of one forward pass over all max_seq positions, by part.

    Counted: the token and position embeddings (0: they are lookups and an addition),
    q/k/v, attention scores, the weighted sums of v, the attention projection, an
    encoder-decoder's cross-attention (all of its own q, k/v, scores, sums and
    projection), the two feed-forward products and the logits. A causal mask halves
    scores and sums: row i pairs with keys 0..i only, as the workbook computes them;
    an encoder and cross-attention pair every position with every position.
    """
    m, T, V = spec.model, spec.model.max_seq, len(spec.out_vocab)  # V: the head's tokens
    d, da, hs, H = m.d_model, m.d_attn, m.head_size, m.n_head
    L, E = m.n_layer, m.n_enc_layer  # decoder (or only) blocks, encoder blocks
    pairs = T * (T + 1) // 2 if m.causal else T * T  # (i, j) a decoder block computes
    attend = H * hs * (L * pairs + E * T * T)
    cross = T * d * da + T * d * 2 * da + 2 * H * T * T * hs + T * da * d
    parts = {
        "embeddings": 0,
        "qkv": (L + E) * T * d * 3 * da,
        "scores": attend,
        "weighted sums": attend,
        "attn proj": (L + E) * T * da * d,
        "cross": L * cross if E else 0,
        "mlp": (L + E) * T * 2 * d * m.d_ff if m.mlp else 0,
        "logits": T * d * V,
    }
    parts["total"] = sum(parts.values())
    return parts
