"""Gradient-check figures: for each spec of tests/test_grad.py, the largest
|analytic - numeric| over its weight arrays, and the largest relative to the array's
largest gradient (central differences, h = 1e-5, float64).

    python benchmarks/gradcheck.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_grad as t  # noqa: E402

from xlformer import grad  # noqa: E402
from xlformer.weights import random_weights  # noqa: E402


def main() -> None:
    worst_abs = worst_rel = 0.0
    for name, make in t.SPECS.items():
        spec = make()
        params = random_weights(spec, seed=3, std=0.5)
        ids, targets = t.batch(spec, seed=4)
        _, grads, _ = grad.loss_and_grads(spec, params, ids, targets)
        rows = []
        for k, g in grads.items():
            err = np.abs(g - t.numeric_gradient(spec, params, ids, targets, k)).max()
            scale = np.abs(g).max()
            rows.append((err, err / scale if scale else 0.0, scale, k))
        a, r = max(rows), max(rows, key=lambda row: row[1])
        worst_abs, worst_rel = max(worst_abs, a[0]), max(worst_rel, r[1])
        print(f"{name:<16} {len(grads):>3} arrays  max abs err {a[0]:.1e} ({a[3]})  "
              f"max rel err {r[1]:.1e} ({r[3]}, largest |grad| {r[2]:.1e})")
    print(f"all: max abs err {worst_abs:.1e}, max rel err {worst_rel:.1e}")


if __name__ == "__main__":
    main()
