"""The NumPy reference against values worked out by hand, not against itself."""

import math

import numpy as np
import pytest

from xlformer import reference as ref
from xlformer.spec import parse_spec


def test_softmax_of_log_ratios():
    # exp of [0, ln 2, ln 5] is 1, 2, 5: probabilities 1/8, 2/8, 5/8.
    m, e, s, p = ref.softmax(np.array([[0.0, math.log(2), math.log(5)]]))
    assert m[0, 0] == pytest.approx(math.log(5))
    np.testing.assert_allclose(e, [[1 / 5, 2 / 5, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(s, [[8 / 5]], rtol=1e-15)
    np.testing.assert_allclose(p, [[1 / 8, 2 / 8, 5 / 8]], rtol=1e-15)


def test_softmax_mask_gives_exact_zeros_and_survives_huge_scores():
    scores = np.array([[1000.0, 5000.0], [-1000.0, -1000.0]])
    mask = np.array([[True, False], [True, True]])
    _, _, _, p = ref.softmax(scores, mask)
    assert p.tolist() == [[1.0, 0.0], [0.5, 0.5]]


def test_layer_norm_by_hand():
    # mean 2.5; population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    mean, var, rstd, y = ref.layer_norm(x, np.full(4, 2.0), np.full(4, 1.0), 0.0)
    assert (mean[0, 0], var[0, 0]) == (2.5, 1.25)
    want = [2 * (v - 2.5) / math.sqrt(1.25) + 1 for v in (1, 2, 3, 4)]
    np.testing.assert_allclose(y, [want], rtol=1e-15)


def test_layer_norm_of_a_constant_row_is_finite():
    *_, y = ref.layer_norm(np.full((1, 3), 7.0), np.ones(3), np.zeros(3), 1e-5)
    assert y.tolist() == [[0.0, 0.0, 0.0]]


def test_gelu_tanh_form_is_close_to_the_erf_form():
    for x in (-3.0, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5):
        exact = 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
        assert ref.gelu(np.array(x)) == pytest.approx(exact, abs=1e-3)


def test_sinusoidal_positions():
    pe = ref.sinusoidal(3, 4)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1])
    np.testing.assert_allclose(pe[2], [math.sin(2), math.cos(2),
                                       math.sin(2 / 100), math.cos(2 / 100)])


def test_binary_code_of_the_reversal_positions():
    pe = ref.binary_code((0, 1, 3, 4, 6, 7), 3, 4)
    assert pe[:, 0].tolist() == [0] * 6
    assert pe[1, 1:].tolist() == [-1, -1, 1]  # 001
    assert pe[4, 1:].tolist() == [1, 1, -1]  # 110
    np.testing.assert_array_equal(pe[::-1, 1:], -pe[:, 1:])  # mirrors are complements


ONE_HEAD = """
name = "one-head"
[vocab]
tokens = ["a", "b"]
[model]
max_seq = 2
d_model = 2
n_head = 1
n_layer = 1
mlp = false
norm = "none"
positions = "none"
causal = false
residual = false
bias = false
"""


def test_one_attention_head_by_hand():
    """q = k = v = the one-hot embedding: every step can be written down."""
    spec = parse_spec(ONE_HEAD)
    eye = np.eye(2)
    params = {"wte": eye, "h.0.attn.c_attn.weight": np.hstack([eye, eye, eye]),
              "h.0.attn.c_proj.weight": eye}
    t = ref.forward(spec, params, "ab")
    a = 1 / math.sqrt(2)  # q.k of a token with itself, scaled by 1/sqrt(head size 2)
    np.testing.assert_allclose(t["h.0.attn.head0.scores"], [[a, 0], [0, a]])
    w_self = math.exp(a) / (math.exp(a) + 1)
    weights = [[w_self, 1 - w_self], [1 - w_self, w_self]]
    np.testing.assert_allclose(t["h.0.attn.head0.weights"], weights, rtol=1e-15)
    np.testing.assert_allclose(t["h.0.attn.c_proj"], weights, rtol=1e-15)
    # tied head: logits = x . wte^T = the weights themselves
    np.testing.assert_allclose(t["logits"], weights, rtol=1e-15)
    assert t["output.ids"].tolist() == [0, 1]


def test_causal_mask_by_hand():
    spec = parse_spec(ONE_HEAD.replace("causal = false", "causal = true"))
    eye = np.eye(2)
    params = {"wte": eye, "h.0.attn.c_attn.weight": np.hstack([eye, eye, eye]),
              "h.0.attn.c_proj.weight": eye}
    t = ref.forward(spec, params, "ab")
    assert t["h.0.attn.head0.weights"][0].tolist() == [1.0, 0.0]


def test_encode_pads_and_reads_unknown_characters_as_padding():
    spec = parse_spec(ONE_HEAD.replace('tokens = ["a", "b"]', 'tokens = [" ", "a", "B"]')
                      .replace("max_seq = 2", "max_seq = 4").replace('"one-head"', '"x"'))
    assert ref.encode(spec.vocab, "aBb", 4).tolist() == [1, 2, 0, 0]
    assert ref.one_hot(spec.vocab, "ab", 4)[1].tolist() == [0.0, 0.0, 0.0]
