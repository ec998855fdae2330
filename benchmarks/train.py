"""Per trained template: retrain by its [train] recipe; time, held-out accuracy, and
whether the result is the committed .npz.

    python benchmarks/train.py [--only NAME ...]

`train s` is wall-clock time on this machine, other load included; `cpu s` is this
process's CPU time (NumPy may use more than one core); `ms/step` divides the wall time
by the steps. Held-out accuracy is computed by the reference, i.e. what the
workbook computes: exact match of the whole output for the algorithmic tasks, next
characters of the held-out last 10% of the text for `lm`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from xlformer import catalog, train
from xlformer.spec import load_spec
from xlformer.weights import make_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="template names (default: every trained one)")
    args = parser.parse_args()
    specs = {n: load_spec(catalog.resolve(n)) for n in args.only or catalog.names()}
    print(f"{'template':<18} {'task':<8} {'steps':>6} {'train s':>8} {'cpu s':>7} {'ms/step':>8} "
          f"{'held-out accuracy':>22}  same as committed")
    for name, spec in specs.items():
        recipe = spec.train
        if recipe is None:
            continue
        text = recipe.text.read_text(encoding="utf-8") if recipe.text else None
        start, cpu = time.perf_counter(), time.process_time()
        *_, params = train.train(spec, recipe.task, recipe.steps, recipe.seed, text,
                                 batch=recipe.batch, lr=recipe.lr)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        accuracy, size = train.evaluate(spec, params, recipe.task, text)
        committed = make_weights(spec)
        same = all(np.array_equal(params[k], committed[k]) for k in committed)
        unit = "chars" if recipe.task == "lm" else "inputs"
        print(f"{name:<18} {recipe.task:<8} {recipe.steps:>6} {seconds:>8.1f} {cpu:>7.1f} "
              f"{1000 * seconds / recipe.steps:>8.2f} "
              f"{f'{accuracy:.1%} of {size} {unit}':>22}  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
