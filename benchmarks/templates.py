"""Per template: cells written, formulas, build time, recalculation time per engine, largest error.

    python benchmarks/templates.py [--repeat N]

Times are the median of N runs; recalculation includes the engine's start-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from xlformer import builder, catalog, recalc, writer
from xlformer.reader import open_values, read_built
from xlformer.spec import load_spec
from xlformer.verify import compare
from xlformer.weights import make_weights


def median_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def build(name: str, path: Path) -> dict:
    spec = load_spec(catalog.resolve(name))
    book = builder.build(spec, make_weights(spec), spec.text)
    writer.save(book, path)
    cells, formulas = book.counts()
    return {"cells": cells, "formulas": formulas}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'template':<17} {'cells':>7} {'formulas':>8} {'bytes':>8} {'build s':>8} "
          + " ".join(f"{e + ' s':>14} {'max abs err':>11} {'max rel err':>11}"
                     for e in recalc.ENGINES))
    with tempfile.TemporaryDirectory() as tmp:
        for name in catalog.names():
            path = Path(tmp) / f"{name}.xlsx"
            seconds, stats = median_time(lambda n=name, p=path: build(n, p), args.repeat)
            row = (f"{name:<17} {stats['cells']:>7,} {stats['formulas']:>8,} "
                   f"{path.stat().st_size:>8,} {seconds:>8.3f}")
            built = read_built(path)
            for engine in recalc.ENGINES:
                out = Path(tmp) / engine
                secs, [result] = median_time(
                    lambda e=engine, o=out, p=path: recalc.recalc([p], e, o), args.repeat)
                checks = compare(built, open_values(result), engine)
                assert all(c.ok for c in checks), [c.problems for c in checks if not c.ok]
                row += (f" {secs:>14.2f} {max(c.max_abs for c in checks):>11.1e}"
                        f" {max(c.max_rel for c in checks):>11.1e}")
            print(row)


if __name__ == "__main__":
    main()
