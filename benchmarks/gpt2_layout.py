"""GPT-2 small's shape: its weights, rounded, and where the layout puts every block.

Prints the time of turning weights into the numbers the sheet holds with NumPy against
the per-element Python formatting it replaces (same numbers, measured in this run): float64
rounded to 15 significant digits, float32 to its shortest decimal. Then the time and peak
memory of making GPT-2-shaped random float32 weights (d_model 768, 12 layers, 12 heads,
vocabulary 50,257, 1,024 rows of wpe), the time to plan its workbook (a built book is a
plan: block cells are made when written) and the last row and column of every sheet,
against Excel's limits. Writes nothing.

With --recompute it also builds GPT-2's vocabulary and position table on a small body
(d_model 8, 1 layer, 4 positions), writes it to a temporary folder and verifies it in
LibreOffice and Gnumeric (minutes): the vocabulary down the rows, end to end.

    python benchmarks/gpt2_layout.py [--recompute]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xlformer import builder, writer
from xlformer.a1 import MAX_COLS, MAX_ROWS
from xlformer.spec import parse_spec
from xlformer.verify import verify
from xlformer.weights import make_weights, to_sheet_precision

GPT2 = """name = "gpt2-small"
ids = [464, 2068, 7586, 21831, 18045, 625, 262, 16931]
[vocab]
input = "ids"
size = 50257
[model]
max_seq = 8
n_positions = 1024
d_model = 768
n_head = 12
n_layer = 12
[weights]
dtype = "float32"
"""


SMALL_BODY = """name = "gpt2-vocab"
ids = [464, 2068, 50256]
[vocab]
input = "ids"
size = 50257
[model]
max_seq = 4
n_positions = 1024
d_model = 8
n_head = 2
n_layer = 1
"""


def recompute() -> None:
    spec = parse_spec(SMALL_BODY)
    params = make_weights(spec)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2-vocab.xlsx"
        t = time.perf_counter()
        book = builder.build(spec, params, spec.ids)
        writer.save(book, path)
        cells, formulas = book.counts()
        print(f"GPT-2 vocabulary on a small body: built and written in "
              f"{time.perf_counter() - t:.1f} s, {cells:,} cells ({formulas:,} formulas), "
              f"{path.stat().st_size / 1e6:.1f} MB")
        for engine in ("libreoffice", "gnumeric"):
            t = time.perf_counter()
            checks = verify(path, (engine,))
            failed = [c.block for c in checks if not c.ok]
            print(f"{engine}: recomputed and compared in {time.perf_counter() - t:.0f} s, "
                  f"{len(checks)} checks, failed: {', '.join(failed) or 'none'}")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rounding(n: int = 2_000_000) -> None:
    x = np.random.default_rng(0).normal(0, 0.02, n)
    for what, value, one in (("float64 to 15 digits", x, lambda v: float(f"{v:.15g}")),
                             ("float32 to shortest", x.astype(np.float32),
                              lambda v: float(str(v)))):
        to_sheet_precision(value[:1000])  # warm-up: first calls into NumPy's ufuncs
        t = time.perf_counter()
        fast = to_sheet_precision(value)
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        slow = np.array([one(v) + 0.0 for v in value])
        t_slow = time.perf_counter() - t
        same = np.array_equal(fast.view(np.int64), slow.view(np.int64))
        print(f"{what}, {n:,} weights: NumPy {t_fast:.2f} s, per element {t_slow:.2f} s, "
              f"ratio {t_slow / t_fast:.1f}x, bit-identical: {same}")


def main() -> None:
    rounding()
    spec = parse_spec(GPT2)
    t = time.perf_counter()
    params = make_weights(spec)
    n = sum(v.size for v in params.values())
    print(f"make_weights: {n:,} parameters in {time.perf_counter() - t:.1f} s, "
          f"peak RSS {peak_mb():,.0f} MB")
    t = time.perf_counter()
    book = builder.build(spec, params, spec.ids)
    print(f"plan (build without writing): {time.perf_counter() - t:.1f} s, "
          f"peak RSS {peak_mb():,.0f} MB; notices: {'; '.join(book.notices) or 'none'}")
    print(f"blocks stored transposed: {', '.join(builder.transposed_blocks(spec))}")
    print("| sheet | last row | last column |\n| --- | --- | --- |")
    for name, sheet in book.sheets.items():
        row, col = sheet.bounds()
        print(f"| {name} | {row:,} | {col:,} |")
    print(f"Excel's limits: {MAX_ROWS:,} rows, {MAX_COLS:,} columns")
    if "--recompute" in sys.argv[1:]:
        recompute()


if __name__ == "__main__":
    main()
