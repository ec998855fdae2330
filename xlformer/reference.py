"""The NumPy reference: the oracle every workbook is checked against.

One small function per concept, in the spirit of picoGPT. `forward` returns every
intermediate under the dotted name of the workbook block that computes it
(`h.0.attn.head1.weights`, `h.0.ln_1`, `logits`, ...), so a teacher can put this file
beside the sheet and a test can compare them block by block.
"""

from __future__ import annotations

import numpy as np

from .spec import Spec, Vocab
from .weights import Params

Trace = dict[str, np.ndarray]


def encode(vocab: Vocab, text: str, max_seq: int) -> np.ndarray:
    """Token ids as the sheet reads them: pad past the end, pad for unknown characters."""
    chars = list(text[:max_seq]) + [vocab.pad] * (max_seq - len(text[:max_seq]))
    index = {t: i for i, t in enumerate(vocab.tokens)}
    return np.array([index.get(c, vocab.pad_id) for c in chars])


def one_hot(vocab: Vocab, text: str, max_seq: int) -> np.ndarray:  # -> [T, V]
    """Which vocabulary entry each position's character is; all zeros when none."""
    chars = list(text[:max_seq]) + [vocab.pad] * (max_seq - len(text[:max_seq]))
    return np.array([[float(c == t) for t in vocab.tokens] for c in chars])


def decode(vocab: Vocab, ids: np.ndarray) -> str:
    return "".join(vocab.tokens[i] for i in ids)


def gelu(x):  # tanh form, as GPT-2
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def relu(x):
    return np.maximum(0.0, x)


def linear(x, w, b=None):  # [T, in], [in, out], [out] -> [T, out]
    return x @ w if b is None else x @ w + b


def softmax(x, mask=None):  # [T, n] -> max [T, 1], exp [T, n], sum [T, 1], p [T, n]
    allowed = np.ones_like(x, dtype=bool) if mask is None else mask
    m = np.max(np.where(allowed, x, -np.inf), axis=-1, keepdims=True)
    e = np.where(allowed, np.exp(np.where(allowed, x - m, 0.0)), 0.0)
    s = np.sum(e, axis=-1, keepdims=True)
    return m, e, s, e / s


def layer_norm(x, g, b, eps):  # [T, d] -> mean [T, 1], var [T, 1], rstd [T, 1], [T, d]
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)  # population variance
    rstd = 1 / np.sqrt(var + eps)
    return mean, var, rstd, (x - mean) * rstd * g + b


def sinusoidal(max_seq: int, d: int) -> np.ndarray:  # -> [T, d]
    pos = np.arange(max_seq)[:, None]
    i = np.arange(d)[None, :]
    angle = pos / np.power(10000.0, 2 * (i // 2) / d)
    return np.where(i % 2 == 0, np.sin(angle), np.cos(angle))


def binary_code(codes: tuple[int, ...], bits: int, d: int) -> np.ndarray:  # -> [T, d]
    """Each position's code in its last `bits` dimensions, most significant bit first, as +-1."""
    pe = np.zeros((len(codes), d))
    for p, code in enumerate(codes):
        for k in range(bits):
            pe[p, d - bits + k] = 1.0 if (code >> (bits - 1 - k)) & 1 else -1.0
    return pe


def forward(spec: Spec, params: Params, text: str) -> Trace:
    """Run the model on `text`; return every intermediate by block name."""
    m, out = spec.model, {}
    ids = out["input.ids"] = encode(spec.vocab, text, m.max_seq)
    out["input.onehot"] = one_hot(spec.vocab, text, m.max_seq)
    x = out["tok_emb"] = params["wte"][ids]
    pe = positional(spec, params)
    if pe is not None:
        out["pos_emb"] = pe
        x = out["embed"] = x + pe
    for i in range(m.n_layer):
        x = block(spec, params, x, f"h.{i}", out)
    if m.norm == "pre":
        x = record_norm(out, "ln_f", x, params, m.ln_eps)
    w = params["wte"].T if spec.head.tied else params["lm_head.weight"]
    logits = out["logits"] = linear(x, w, params.get("lm_head.bias"))
    out["probs.max"], out["probs.exp"], out["probs.sum"], out["probs"] = softmax(logits)
    out["output.ids"] = np.argmax(logits, axis=-1)
    return out


def positional(spec: Spec, params: Params) -> np.ndarray | None:
    m = spec.model
    if m.positions == "learned":
        return params["wpe"]
    if m.positions == "sinusoidal":
        return sinusoidal(m.max_seq, m.d_model)
    if m.positions == "binary":
        return binary_code(m.binary_codes, m.binary_bits, m.d_model)
    return None


def block(spec: Spec, params: Params, x, p: str, out: Trace):  # [T, d] -> [T, d]
    """One transformer block: attention then feed-forward, each with norm and residual."""
    m = spec.model
    x = sublayer(spec, params, x, p, "ln_1", "resid_attn", attention, out)
    if m.mlp:
        x = sublayer(spec, params, x, p, "ln_2", "resid_mlp", mlp, out)
    return x


def sublayer(spec, params, x, p, ln, resid, fn, out):
    """Pre-norm: x + f(ln(x)). Post-norm: ln(x + f(x)). Either without norm or residual."""
    m = spec.model
    norm = m.norm != "none"
    h = record_norm(out, f"{p}.{ln}", x, params, m.ln_eps) if norm and m.norm == "pre" else x
    y = fn(spec, params, h, p, out)
    if m.residual:
        y = out[f"{p}.{resid}"] = x + y
    if norm and m.norm == "post":
        y = record_norm(out, f"{p}.{ln}", y, params, m.ln_eps)
    return y


def record_norm(out: Trace, name: str, x, params: Params, eps: float):
    g, b = params[f"{name}.weight"], params[f"{name}.bias"]
    out[f"{name}.mean"], out[f"{name}.var"], out[f"{name}.rstd"], y = layer_norm(x, g, b, eps)
    out[name] = y
    return y


def attention(spec: Spec, params: Params, x, p: str, out: Trace):  # [T, d] -> [T, d]
    m = spec.model
    a = f"{p}.attn"
    qkv = out[f"{a}.c_attn"] = linear(x, params[f"{a}.c_attn.weight"],
                                      params.get(f"{a}.c_attn.bias"))
    T, hs, da = m.max_seq, m.head_size, m.d_attn
    mask = np.tril(np.ones((T, T), dtype=bool)) if m.causal else None
    heads = []
    for h in range(m.n_head):
        n = f"{a}.head{h}"
        q = out[f"{n}.q"] = qkv[:, h * hs:(h + 1) * hs]
        k = out[f"{n}.k"] = qkv[:, da + h * hs:da + (h + 1) * hs]
        v = out[f"{n}.v"] = qkv[:, 2 * da + h * hs:2 * da + (h + 1) * hs]
        scores = q @ k.T
        if m.scale:
            scores = scores * (1 / np.sqrt(hs))
        out[f"{n}.scores"] = scores
        pairwise(params, x, a, h, m, out)
        out[f"{n}.max"], out[f"{n}.exp"], out[f"{n}.sum"], wts = softmax(scores, mask)
        out[f"{n}.weights"] = wts
        heads.append(_record(out, f"{n}.out", wts @ v))
    cat = out[f"{a}.heads"] = np.concatenate(heads, axis=-1)
    return _record(out, f"{a}.c_proj",
                   linear(cat, params[f"{a}.c_proj.weight"], params.get(f"{a}.c_proj.bias")))


def pairwise(params: Params, x, a: str, h: int, m, out: Trace) -> None:  # x [T, d]
    """The same scores as a bilinear form of the inputs: q.k = x W_Q W_K^T x^T. With
    biases, x gets a column of ones and W_Q, W_K a row of biases, so the form is exact."""
    hs, da, n = m.head_size, m.d_attn, f"{a}.head{h}"
    w, b = params[f"{a}.c_attn.weight"], params.get(f"{a}.c_attn.bias")
    wq, wk = w[:, h * hs:(h + 1) * hs], w[:, da + h * hs:da + (h + 1) * hs]
    if b is not None:
        wq = np.vstack([wq, b[h * hs:(h + 1) * hs]])
        wk = np.vstack([wk, b[da + h * hs:da + (h + 1) * hs]])
        x = np.hstack([x, np.ones((x.shape[0], 1))])
    w_qk = out[f"{n}.w_qk"] = wq @ wk.T  # [d(+1), d(+1)]
    x_wqk = out[f"{n}.x_wqk"] = x @ w_qk  # [T, d(+1)]
    scores = x_wqk @ x.T
    out[f"{n}.scores_qk"] = scores * (1 / np.sqrt(hs)) if m.scale else scores


def mlp(spec: Spec, params: Params, x, p: str, out: Trace):  # [T, d] -> [T, d]
    f = f"{p}.mlp"
    pre = out[f"{f}.c_fc"] = linear(x, params[f"{f}.c_fc.weight"], params.get(f"{f}.c_fc.bias"))
    act = out[f"{f}.act"] = (gelu if spec.model.activation == "gelu" else relu)(pre)
    return _record(out, f"{f}.c_proj",
                   linear(act, params[f"{f}.c_proj.weight"], params.get(f"{f}.c_proj.bias")))


def _record(out: Trace, name: str, value):
    out[name] = value
    return value
