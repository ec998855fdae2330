"""xlformer's reference against the independent forward pass in `oracle.py`, which knows
the spec only as its TOML tables and the weights only as arrays; and one attention head
worked out by hand, with head_size != d_model so the two possible scales differ."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import oracle
import pytest
from specgen import random_tables, random_text, to_toml

from xlformer import reference
from xlformer.spec import parse_spec
from xlformer.weights import make_weights

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

SEEDS = range(40)


def decoder_tables(seed: int) -> dict:
    """Seeded random decoder-only (or encoder-only: causal = false) tables that between
    them pair every norm with every kind of position."""
    rng = random.Random(seed)
    return random_tables(rng, f"oracle-{seed}", ["none", "learned", "sinusoidal", "binary"]
                         [seed % 4], ["pre", "post", "none"][seed // 4 % 3])


def encoder_decoder_tables(seed: int) -> dict:
    """An encoder-decoder: the decoder's self-attention causal, its own target vocabulary."""
    tables = decoder_tables(seed)
    rng = random.Random(seed + 500)
    model = tables["model"]
    model |= {"n_enc_layer": rng.randint(1, 2), "causal": True,
              "max_seq": max(2, model["max_seq"])}
    if model["positions"] == "binary":  # codes of the new max_seq
        bits = min(2, model["d_model"])
        model["binary_codes"] = [rng.randrange(2**bits) for _ in range(model["max_seq"])]
    target = rng.sample("^$abcxyz", rng.randint(3, 8))
    if "^" not in target:
        target[0] = "^"
    tables["target_vocab"] = {"tokens": target, "pad": target[-1]}
    tables["generate"] = {"start": "^"}
    return tables


def ids_of(text: str, tokens: list[str], pad: str, T: int) -> list[int]:
    """The sheet's reading of a text, from the README: pad past the end and for any
    character outside the vocabulary."""
    chars = list(text[:T]) + [pad] * (T - len(text[:T]))
    return [tokens.index(ch) if ch in tokens else tokens.index(pad) for ch in chars]


def compare(want: dict, got: dict) -> None:
    assert want.keys() <= got.keys(), sorted(want.keys() - got.keys())
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("seed", SEEDS)
def test_reference_equals_the_oracle_on_a_decoder(seed):
    tables = decoder_tables(seed)
    spec = parse_spec(to_toml(tables))
    params = make_weights(spec)
    text = random_text(random.Random(seed + 1000), list(spec.vocab.tokens),
                       spec.model.max_seq) + "\u00e9"  # a character outside the vocabulary
    vocab = tables["vocab"]
    ids = ids_of(text, vocab["tokens"], vocab["pad"], tables["model"]["max_seq"])
    compare(oracle.forward(tables, params, ids), reference.forward(spec, params, text))


@pytest.mark.parametrize("seed", SEEDS[:16])
def test_reference_equals_the_oracle_on_an_encoder_decoder(seed):
    tables = encoder_decoder_tables(seed)
    spec = parse_spec(to_toml(tables))
    params = make_weights(spec)
    rng, T = random.Random(seed), tables["model"]["max_seq"]
    source = [rng.randrange(len(tables["vocab"]["tokens"])) for _ in range(T)]
    fed = [rng.randrange(len(tables["target_vocab"]["tokens"])) for _ in range(T)]
    got: dict = {}
    memory = reference.encoder(spec, params, np.array(source), got)
    reference.decoder(spec, params, np.array(fed), got, memory)
    compare(oracle.forward(tables, params, fed, source), got)


def test_the_cases_cover_every_switch():
    tables = [decoder_tables(s) for s in SEEDS] + [encoder_decoder_tables(s) for s in SEEDS[:16]]
    seen = {key: {oracle.config(t)[key] for t in tables}
            for key in ("norm", "positions", "causal", "residual", "bias", "mlp", "activation",
                        "scale", "tied", "head_bias")}
    assert seen == {"norm": {"pre", "post", "none"},
                    "positions": {"none", "learned", "sinusoidal", "binary"},
                    **{k: {True, False} for k in ("causal", "residual", "bias", "mlp", "scale",
                                                  "tied", "head_bias")},
                    "activation": {"relu", "gelu"}}
    configs = [oracle.config(t) for t in tables]
    assert any(c["n_head"] > 1 and c["head_size"] != c["d_model"] for c in configs)
    assert any(c["n_enc_layer"] > 0 for c in configs)


# One head by hand. Tokens a, b embed as e1, e2 in d_model = 4; one head of size 2 (so the
# scale 1/sqrt(2) is not 1/sqrt(d_model) = 1/2): q(a) = (1, 0), q(b) = (0, 2),
# k(a) = (2, 0), k(b) = (0, 1), v(a) = (1, 0), v(b) = (0, 1); c_proj writes the head to the
# first two dimensions and the tied head reads them back, so the logits are the weights.
HAND = """
name = "hand"
text = "ab"
[vocab]
tokens = ["a", "b"]
pad = "a"
[model]
max_seq = 2
d_model = 4
n_head = 1
head_size = 2
n_layer = 1
mlp = false
norm = "none"
positions = "none"
residual = false
bias = false
causal = {causal}
[weights]
source = "npz"
file = "hand.npz"
"""


def hand_weights() -> dict[str, np.ndarray]:
    wte = np.eye(2, 4)
    c_attn = np.zeros((4, 6))
    c_attn[0, 0], c_attn[1, 1] = 1, 2  # q
    c_attn[0, 2], c_attn[1, 3] = 2, 1  # k
    c_attn[0, 4], c_attn[1, 5] = 1, 1  # v
    return {"wte": wte, "h.0.attn.c_attn.weight": c_attn, "h.0.attn.c_proj.weight": np.eye(2, 4)}


@pytest.mark.parametrize("causal", [False, True])
def test_one_head_by_hand(causal, tmp_path):
    buffer = io.BytesIO()
    np.savez(buffer, **hand_weights())
    (tmp_path / "hand.npz").write_bytes(buffer.getvalue())
    source = HAND.format(causal=str(causal).lower())
    spec = parse_spec(source, base=tmp_path)
    params = make_weights(spec)
    # Scores: a.a = 2, a.b = 0, b.a = 0, b.b = 2, each divided by sqrt(2).
    s = 1 / (1 + math.exp(-2 / math.sqrt(2)))  # softmax of (sqrt 2, 0) is (s, 1 - s)
    want = [[1.0, 0.0] if causal else [s, 1 - s], [1 - s, s]]
    trace = reference.forward(spec, params, "ab")
    ours = oracle.forward(tomllib.loads(source), params, [0, 1])
    for got in (trace["h.0.attn.head0.weights"], trace["logits"][:, :2],
                ours["h.0.attn.head0.weights"], ours["logits"][:, :2]):
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-16)
