"""Per hand-built template: how far every input is from a wrong output.

    python benchmarks/margins.py

The lead is the winning logit minus the runner-up at every position. The head reads the
code c attended to (reverse, transpose) or looked up (atbash) with logits
s*(c^2 - (c - a)^2), so the lead is s*(1 - 2*|c - a|): s when c is exact. Attention
here reads positions only, so its weights are the same for every input, and the code
attended to at a position is off from its target's code by a sum over the other
positions, each term largest when that position holds an extreme code. Every printable
character at every position, with all other positions at one extreme ("~" or " "),
therefore covers the worst case of every input: 95^T inputs in 2 * 95 * T runs.
"""

from __future__ import annotations

import string

import numpy as np

from xlformer import catalog, reference
from xlformer.spec import load_spec
from xlformer.weights import make_weights

ATBASH = str.maketrans(string.ascii_lowercase + string.ascii_uppercase,
                       string.ascii_lowercase[::-1] + string.ascii_uppercase[::-1])


def answer(task: str, text: str) -> str:
    if task == "reverse":
        return text[::-1]
    if task == "atbash":
        return text.translate(ATBASH)
    n = int(len(text) ** 0.5)  # transpose: n x n, row-major
    return "".join(np.array(list(text)).reshape(n, n).T.ravel())


def worst_cases(tokens: tuple[str, ...], length: int):
    extremes = (max(tokens), min(tokens))
    for fill in extremes:
        for p in range(length):
            for x in tokens:
                yield fill * p + x + fill * (length - p - 1)


def main() -> None:
    print(f"{'template':<10} {'inputs':>7} {'wrong':>6} {'sharpness':>9} "
          f"{'smallest lead':>14} {'smallest top probability':>25}")
    for name in catalog.names():
        spec = load_spec(catalog.resolve(name))
        if spec.weights.source != "task":
            continue
        params, wrong, leads, tops = make_weights(spec), 0, [], []
        texts = list(worst_cases(spec.vocab.tokens, spec.model.max_seq))
        for text in texts:
            trace = reference.forward(spec, params, text)
            wrong += reference.decode(spec.vocab, trace["output.ids"]) != answer(
                spec.weights.task, text)
            top2 = np.sort(trace["logits"], axis=-1)[:, -2:]
            leads.append(np.min(top2[:, 1] - top2[:, 0]))
            tops.append(np.min(trace["probs"].max(axis=-1)))
        print(f"{name:<10} {len(texts):>7} {wrong:>6} {spec.weights.sharpness:>9g} "
              f"{min(leads):>14.9f} {min(tops):>25.6f}")


if __name__ == "__main__":
    main()
