"""A second forward pass, written from the math alone, to check xlformer's reference.

It imports nothing from xlformer. It is handed the spec as the plain tables of its TOML
(`model`, `head`) and the weights as a dict of NumPy arrays under GPT-2's names (README,
"Weights"), and it decides every rule itself: which attention is masked (a decoder's
self-attention when `causal`; never an encoder's, never cross-attention), the scale
(1 / sqrt(head_size)), where norms go, how positions are made. So a rule that xlformer's
builder and reference share, and get wrong together, shows up here as a difference.
"""

from __future__ import annotations

import math

import numpy as np

# The model table's defaults, as README's "Specs" documents them.
DEFAULTS = {"mlp": True, "activation": "gelu", "norm": "pre", "ln_eps": 1e-5,
            "positions": "learned", "causal": True, "scale": True, "residual": True,
            "bias": True, "n_enc_layer": 0, "norm_kind": "layer"}


def config(tables: dict) -> dict:
    """The model table with its defaults, and the head table's two switches."""
    c = DEFAULTS | tables["model"]
    c.setdefault("head_size", c["d_model"] // c["n_head"])
    head = tables.get("head", {})
    c["tied"], c["head_bias"] = head.get("tied", True), head.get("bias", False)
    return c


def softmax(x, allowed):  # [T, n], [T, n] bool -> [T, n]
    x = np.where(allowed, x, -np.inf)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def norm(c, x, w, b):  # [T, d] -> [T, d]
    if c["norm_kind"] == "rms":  # LLaMA's RMSNorm: no centring, gain only
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + c["ln_eps"]) * w
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + c["ln_eps"]) * w + b


def act(c, x):
    if c["activation"] == "relu":
        return np.maximum(x, 0)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def positions(c, P, p: str, T: int):  # -> [T, d] or None
    d, kind = c["d_model"], c["positions"]
    if kind == "learned":
        return P[p + "wpe"][:T]
    if kind == "sinusoidal":  # Vaswani et al.: sin on even, cos on odd dimensions
        pe = np.zeros((T, d))
        for pos in range(T):
            for i in range(d):
                angle = pos / 10000 ** (2 * (i // 2) / d)
                pe[pos, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
        return pe
    if kind == "binary":  # the code's bits, most significant first, in the last dimensions
        codes = c["binary_codes"]
        bits = max(max(codes).bit_length(), 1)
        pe = np.zeros((T, d))
        for pos, code in enumerate(codes[:T]):
            for k, bit in enumerate(format(code, f"0{bits}b")):
                pe[pos, d - bits + k] = 1.0 if bit == "1" else -1.0
        return pe
    return None


def dense(P, name: str, x):  # [T, in] -> [T, out], weights stored (in, out)
    y = x @ P[name + ".weight"]
    return y + P[name + ".bias"] if name + ".bias" in P else y


def attend(c, q, k, v, masked: bool, out: dict, name: str):  # -> [Tq, n_head * hs]
    hs = c["head_size"]
    allowed = np.ones((q.shape[0], k.shape[0]), dtype=bool)
    if masked:
        allowed = np.arange(k.shape[0])[None, :] <= np.arange(q.shape[0])[:, None]
    heads = []
    for h in range(c["n_head"]):
        s = slice(h * hs, (h + 1) * hs)
        scores = q[:, s] @ k[:, s].T / (math.sqrt(hs) if c["scale"] else 1.0)
        weights = out[f"{name}.head{h}.weights"] = softmax(scores, allowed)
        heads.append(weights @ v[:, s])
    return np.concatenate(heads, axis=-1)


def sublayer(c, P, x, ln: str, f):  # pre: x + f(ln(x)); post: ln(x + f(x))
    if c["norm"] == "pre":
        y = f(norm(c, x, P.get(ln + ".weight"), P.get(ln + ".bias")))
        return x + y if c["residual"] else y
    y = f(x)
    y = x + y if c["residual"] else y
    if c["norm"] == "post":
        return norm(c, y, P.get(ln + ".weight"), P.get(ln + ".bias"))
    return y


def stack(c, P, ids, p: str, n_layer: int, masked: bool, out: dict, memory=None):
    """Embeddings and blocks of one stack (`enc.`, `dec.` or '' for a decoder-only model),
    then the final norm of a pre-norm model."""
    da = c["n_head"] * c["head_size"]
    x = P[p + "wte"][ids]
    pe = positions(c, P, p, len(ids))
    if pe is not None:
        x = x + pe
    for i in range(n_layer):
        b = f"{p}h.{i}."

        def self_attn(h, b=b):
            qkv = dense(P, b + "attn.c_attn", h)
            q, k, v = qkv[:, :da], qkv[:, da:2 * da], qkv[:, 2 * da:]
            return dense(P, b + "attn.c_proj", attend(c, q, k, v, masked, out, b + "attn"))

        def cross(h, b=b):
            kv = dense(P, b + "cross.c_kv", memory)
            heads = attend(c, dense(P, b + "cross.c_q", h), kv[:, :da], kv[:, da:], False,
                           out, b + "cross")
            return dense(P, b + "cross.c_proj", heads)

        def mlp(h, b=b):
            return dense(P, b + "mlp.c_proj", act(c, dense(P, b + "mlp.c_fc", h)))

        x = sublayer(c, P, x, b + "ln_1", self_attn)
        if memory is not None:
            x = sublayer(c, P, x, b + "ln_cross", cross)
        if c["mlp"]:
            x = sublayer(c, P, x, b + "ln_2", mlp)
    if c["norm"] == "pre":
        x = norm(c, x, P.get(p + "ln_f.weight"), P.get(p + "ln_f.bias"))
    return x


def forward(tables: dict, P: dict, ids, source_ids=None) -> dict:
    """Logits [T, V] of the decoder's `ids` (over the encoder's `source_ids` in an
    encoder-decoder) and every head's attention weights, by the reference's block names."""
    c, out = config(tables), {}
    memory, p = None, ""
    if c["n_enc_layer"] > 0:
        memory = stack(c, P, np.asarray(source_ids), "enc.", c["n_enc_layer"], False, out)
        p = "dec."
    x = stack(c, P, np.asarray(ids), p, c["n_layer"], c["causal"], out, memory)
    w = P[p + "wte"].T if c["tied"] else P["lm_head.weight"]
    out["logits"] = x @ w + (P["lm_head.bias"] if c["head_bias"] else 0.0)
    return out
