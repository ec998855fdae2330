"""The hand-written backward pass against central finite differences, per weight array.

Models: the twelve seeded random configurations of test_random_specs (every pairing of
norm placement and positional encoding; masks, activations, tied and untied heads,
biases, residuals and scaling switched at random), the corner spec, two templates, and
a grid of every norm placement x mask x activation. Everything in float64.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from test_random_specs import COUNT, random_spec

from xlformer import catalog, grad, reference
from xlformer.spec import load_spec, parse_spec
from xlformer.weights import expected_shapes, random_weights

CORNERS = Path(__file__).parent / "specs" / "corners.toml"
SPECS = {f"random-{s}": (lambda s=s: parse_spec(random_spec(s))) for s in range(COUNT)}
SPECS["corners"] = lambda: load_spec(CORNERS)
TEMPLATES = ("tiny-gpt", "vanilla-encoder")  # the long ones: slow tier only
SPECS |= {n: (lambda n=n: load_spec(catalog.resolve(n))) for n in TEMPLATES}
GRID = """
name = "grid"
[vocab]
tokens = [" ", "a", "b", "c"]
[model]
max_seq = 3
d_model = 4
n_head = 2
n_layer = 1
d_ff = 5
norm = "{norm}"
causal = {causal}
activation = "{activation}"
"""
SPECS |= {  # every norm placement x mask x activation, whatever the random draws cover
    f"{norm}-{'causal' if causal else 'bidirectional'}-{act}":
        partial(parse_spec, GRID.format(norm=norm, causal=str(causal).lower(), activation=act))
    for norm in ("pre", "post", "none") for causal in (True, False) for act in ("gelu", "relu")
}
# |analytic - numeric| <= RTOL * (the array's largest gradient) + ATOL. With h = 1e-5 the
# central difference's own error is ~1e-11 (rounding of a loss near 1, divided by h).
H, RTOL, ATOL = 1e-5, 1e-5, 1e-9


def batch(spec, seed: int, size: int = 2):
    rng = np.random.default_rng(seed)
    shape = (size, spec.model.max_seq)
    ids = rng.integers(0, len(spec.vocab), size=shape)
    targets = rng.integers(0, len(spec.vocab), size=shape)
    targets[0, -1] = -1  # an ignored position
    return ids, targets


def numeric_gradient(spec, params, ids, targets, name, h=H):
    out = np.zeros_like(params[name])
    flat = params[name].reshape(-1)  # a view: nudging it nudges the parameter
    for j in range(flat.size):
        keep = flat[j]
        flat[j] = keep + h
        up = grad.loss_and_grads(spec, params, ids, targets)[0]
        flat[j] = keep - h
        down = grad.loss_and_grads(spec, params, ids, targets)[0]
        flat[j] = keep
        out.reshape(-1)[j] = (up - down) / (2 * h)
    return out


def excess_error(analytic, numeric) -> float:
    """How far the worst entry is past the tolerance, as a fraction of it (<= 1 passes)."""
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)))
    return float(np.max(np.abs(analytic - numeric)) / (RTOL * scale + ATOL))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in TEMPLATES
                                  else n for n in SPECS])
def test_gradients_match_finite_differences(name):
    spec = SPECS[name]()
    params = random_weights(spec, seed=3, std=0.5)
    ids, targets = batch(spec, seed=4)
    _, grads, _ = grad.loss_and_grads(spec, params, ids, targets)
    assert {k: g.shape for k, g in grads.items()} == expected_shapes(spec)
    errors = {k: excess_error(grads[k], numeric_gradient(spec, params, ids, targets, k))
              for k in grads}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1, f"{worst}: {errors[worst]:.2f} x the tolerance"


@pytest.mark.parametrize("name", SPECS)
def test_batched_forward_is_the_reference(name):
    spec = SPECS[name]()
    params = random_weights(spec, seed=5, std=0.5)
    ids, _ = batch(spec, seed=6, size=3)
    logits, _ = grad.forward(spec, params, ids)
    for row, want in zip(ids, logits, strict=True):
        text = reference.decode(spec.vocab, row)
        trace = reference.forward(spec, params, text)
        assert np.array_equal(trace["input.ids"], row) or spec.vocab.pad in text
        np.testing.assert_allclose(want, reference.forward(spec, params, text)["logits"],
                                   rtol=1e-12, atol=1e-12)


def test_cross_entropy_ignores_positions_without_a_target():
    logits = np.random.default_rng(0).normal(size=(1, 3, 4))
    loss, d = grad.cross_entropy(logits, np.array([[1, -1, 2]]))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert loss == pytest.approx(-(np.log(p[0, 0, 1]) + np.log(p[0, 2, 2])) / 2)
    assert not d[0, 1].any()
