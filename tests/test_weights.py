"""Weights: documented names and shapes, clear errors, the hand-built reversal."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlformer import catalog, reference
from xlformer.spec import load_spec
from xlformer.weights import WeightsError, expected_shapes, load_npz, make_weights


@pytest.fixture
def gpt():
    return load_spec(catalog.resolve("tiny-gpt"))


def test_gpt2_names_and_in_out_shapes(gpt):
    shapes = expected_shapes(gpt)
    assert shapes["wte"] == (27, 8) and shapes["wpe"] == (8, 8)
    assert shapes["h.1.attn.c_attn.weight"] == (8, 24)
    assert shapes["h.1.mlp.c_proj.weight"] == (16, 8)
    assert shapes["ln_f.bias"] == (8,)
    assert "lm_head.weight" not in shapes  # tied to wte


def test_random_weights_are_seeded(gpt):
    a, b = make_weights(gpt), make_weights(gpt)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_npz_round_trip(gpt, tmp_path):
    params = make_weights(gpt)
    np.savez(tmp_path / "w.npz", **params)
    loaded = load_npz(gpt, tmp_path / "w.npz")
    assert all(np.array_equal(params[k], loaded[k]) for k in params)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda p: p.pop("h.0.ln_1.bias"), "lacks array 'h.0.ln_1.bias' of shape (8,)"),
    (lambda p: p.update(wte=np.zeros((27, 9))),
     "array 'wte' has shape (27, 9), the spec needs (27, 8)"),
    (lambda p: p.update(wpe=np.full((8, 8), np.nan)), "array 'wpe' holds NaN or infinite"),
    (lambda p: p.update(extra=np.zeros(2)), "arrays the spec does not use: extra"),
])
def test_bad_npz_names_the_array(gpt, tmp_path, mutate, message):
    params = make_weights(gpt)
    mutate(params)
    np.savez(tmp_path / "w.npz", **params)
    with pytest.raises(WeightsError) as err:
        load_npz(gpt, tmp_path / "w.npz")
    assert message in str(err.value)


def test_missing_and_broken_npz(gpt, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_npz(gpt, tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(WeightsError, match="not a readable .npz"):
        load_npz(gpt, tmp_path / "bad.npz")


@pytest.mark.parametrize("word", ["python", "Hello!", "  a  b", "~~~ !!", "{|}()*"])
def test_reference_reverses_with_the_hand_built_weights(word):
    spec = load_spec(catalog.resolve("reverse"))
    trace = reference.forward(spec, make_weights(spec), word)
    assert reference.decode(spec.vocab, trace["output.ids"]) == word[::-1]
    assert np.allclose(trace["h.0.attn.head0.weights"], np.eye(6)[::-1], atol=1e-9)


PRINTABLE = "".join(chr(c) for c in range(32, 127))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=PRINTABLE, max_size=6))
def test_every_printable_input_reverses_exactly(word):
    """The sharpness in templates/reverse.toml suffices for any printable input."""
    spec = load_spec(catalog.resolve("reverse"))
    trace = reference.forward(spec, make_weights(spec), word)
    assert reference.decode(spec.vocab, trace["output.ids"]) == word.ljust(6)[::-1]
    # far from a rounding boundary, not just on the right side of it
    attended = trace["h.0.attn.c_proj"][:, 0]
    codes = np.array([ord(c) for c in word.ljust(6)[::-1]])
    assert np.max(np.abs(attended - codes)) < 1e-6
