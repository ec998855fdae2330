"""The NumPy reference: the oracle every workbook is checked against.

One small function per concept, in the spirit of picoGPT. `forward` returns every
intermediate under the dotted name of the workbook block that computes it
(`h.0.attn.head1.weights`, `h.0.ln_1`, `logits`, ...), so a teacher can put this file
beside the sheet and a test can compare them block by block.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from .spec import Spec, Vocab
from .weights import Params, stack_prefix

Trace = dict[str, np.ndarray]


def encode(vocab: Vocab, text: str, max_seq: int) -> np.ndarray:
    """Token ids as the sheet reads them: pad past the end, pad for unknown characters."""
    chars = list(text[:max_seq]) + [vocab.pad] * (max_seq - len(text[:max_seq]))
    index = {t: i for i, t in enumerate(vocab.tokens)}
    return np.array([index.get(c, vocab.pad_id) for c in chars])


def read_ids(vocab: Vocab, typed, max_seq: int) -> np.ndarray:  # -> [T]
    """Typed token ids as the sheet reads them: a whole number 0..V-1 is that token; an
    empty cell, anything else, and positions past the end are padding."""
    typed = list(typed[:max_seq]) + [None] * (max_seq - len(typed[:max_seq]))
    return np.array([int(v) if is_id(v, len(vocab)) else vocab.pad_id for v in typed])


def is_id(value, size: int) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and float(value).is_integer() and 0 <= value < size)


def one_hot(vocab: Vocab, text: str, max_seq: int) -> np.ndarray:  # -> [T, V]
    """Which vocabulary entry each position's character is; all zeros when none."""
    chars = list(text[:max_seq]) + [vocab.pad] * (max_seq - len(text[:max_seq]))
    return np.array([[float(c == t) for t in vocab.tokens] for c in chars])


def decode(vocab: Vocab, ids: np.ndarray) -> str:
    return vocab.sep.join(vocab.tokens[i] for i in ids)


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


def forward(spec: Spec, params: Params, text: str | Sequence) -> Trace:
    """Run the model on `text` (typed token ids if the spec reads ids); return every
    intermediate by block name.

    A spec with [generate] runs the greedy decode of `generate` and returns the trace of
    the sequence it produced, which is what the sheet computes in one pass."""
    if spec.generate is not None:
        return generate(spec, params, text)[0]
    out: Trace = {}
    decoder(spec, params, source(spec, text, out), out)
    return out


def source(spec: Spec, text: str | Sequence, out: Trace) -> np.ndarray:  # -> ids [T]
    """The input read as tokens: `input.ids` (and `input.onehot` for a text)."""
    T = spec.model.max_seq
    if spec.reads_ids:
        ids = out["input.ids"] = read_ids(spec.vocab, text, T)
        return ids
    out["input.onehot"] = one_hot(spec.vocab, text, T)
    ids = out["input.ids"] = encode(spec.vocab, text, T)
    return ids


def embed(spec: Spec, params: Params, ids, p: str, out: Trace):  # [T] -> [T, d]
    x = out[f"{p}tok_emb"] = params[f"{p}wte"][ids]
    pe = positional(spec, params, p)
    if pe is not None:
        out[f"{p}pos_emb"] = pe
        x = out[f"{p}embed"] = x + pe
    return x


def encoder(spec: Spec, params: Params, ids, out: Trace):  # [T] -> memory [T, d]
    """The encoder of an encoder-decoder: bidirectional blocks `enc.h.N`."""
    x = embed(spec, params, ids, "enc.", out)
    for i in range(spec.model.n_enc_layer):
        x = block(spec, params, x, f"enc.h.{i}", out)
    if spec.model.norm == "pre":
        x = record_norm(out, "enc.ln_f", x, params, spec.model.ln_eps)
    return x


def decoder(spec: Spec, params: Params, ids, out: Trace, memory=None):  # [T] -> logits [T, V]
    """Embeddings, blocks (with cross-attention over `memory` if given), head, argmax."""
    m, p = spec.model, stack_prefix(spec, "dec")
    x = embed(spec, params, ids, p, out)
    for i in range(m.n_layer):
        x = block(spec, params, x, f"{p}h.{i}", out, memory)
    if m.norm == "pre":
        x = record_norm(out, f"{p}ln_f", x, params, m.ln_eps)
    w = params[f"{p}wte"].T if spec.head.tied else params["lm_head.weight"]
    logits = out["logits"] = linear(x, w, params.get("lm_head.bias"))
    if spec.generate is None:
        out["probs.max"], out["probs.exp"], out["probs.sum"], out["probs"] = softmax(logits)
        out["output.ids"] = np.argmax(logits, axis=-1)
    else:
        out["output.ids"] = sample(spec, logits, out)
    return logits


def uniforms(spec: Spec) -> np.ndarray:  # -> [T]
    """The uniform numbers that drive sampling, one per position: the workbook's, or the
    spec seed's (rounded as the sheet holds them)."""
    g, T = spec.generate, spec.model.max_seq
    if g.uniforms:
        return np.array(g.uniforms, dtype=np.float64)
    raw = np.random.default_rng(g.seed).random(T)
    return np.array([float(f"{u:.15g}") for u in raw])


def sample(spec: Spec, logits, out: Trace):  # [T, V] -> ids [T]
    """Temperature, top-k, top-p and inverse-CDF sampling with the spec's uniforms;
    greedy (argmax) at temperature 0."""
    g, V = spec.generate, logits.shape[-1]
    scaled = out["logits.scaled"] = logits / g.temperature if g.temperature > 0 else logits
    larger = (scaled[:, None, :] > scaled[:, :, None]).sum(axis=-1)  # [T, V]
    keep = out["probs.keep"] = (larger < g.top_k if g.top_k > 0 else np.ones_like(scaled)) * 1.0
    out["probs.max"], out["probs.exp"], out["probs.sum"], probs = softmax(scaled, keep > 0)
    out["probs"] = probs
    probs = top_p(probs, keep, g.top_p, out)
    cum = out["probs.cum"] = np.cumsum(probs, axis=-1)
    below = out["probs.below"] = (cum <= uniforms(spec)[:, None]) * 1.0
    if g.temperature == 0:
        return np.argmax(scaled, axis=-1)
    return np.minimum(below.sum(axis=-1), V - 1).astype(int)


def top_p_on(p: float) -> bool:
    """Whether top-p applies: p above 0 and below 1; any other p keeps every token. (A
    typed top-p the sheet does not use reaches the reference as 1: reader.top_p_as_read.)"""
    return 0 < p < 1


def nucleus(probs, p: float):  # [T, V] -> sorted [T, V], sorted cum, ahead, kept [T, V]
    """Top-p (nucleus) sampling's choice: sort each row's probabilities high to low and keep
    the most probable tokens until their mass reaches p. A token is kept when the mass of
    the tokens strictly more probable than it (`ahead`) is below p, so the most probable
    one always is, and tokens of equal probability are kept or dropped together (as top-k
    keeps every token tied with the k-th)."""
    desc = -np.sort(-probs, axis=-1)
    cum = np.cumsum(desc, axis=-1)
    # how many tokens are strictly more probable: the first place of the value in desc
    more = np.stack([np.searchsorted(-d, -row, side="left")
                     for d, row in zip(desc, probs, strict=True)])
    ahead = np.where(more > 0, np.take_along_axis(cum, np.maximum(more - 1, 0), axis=-1), 0.0)
    kept = (ahead < p) * 1.0 if top_p_on(p) else np.ones_like(probs)
    return desc, cum, ahead, kept


def top_p(probs, keep, p: float, out: Trace):  # [T, V] -> [T, V]
    """The probabilities top-p keeps (and top-k kept), renormalised to sum to 1; as
    they were when top-p is off."""
    out["probs.sorted"], out["probs.sorted_cum"], out["probs.ahead"], kept = nucleus(probs, p)
    kept = out["probs.nucleus"] = kept * keep
    mass = out["probs.mass"] = np.sum(probs * kept, axis=-1, keepdims=True)
    out["probs.top_p"] = probs * kept / mass if top_p_on(p) else probs
    return out["probs.top_p"]


def generate(spec: Spec, params: Params, text: str,
             fed: np.ndarray | None = None) -> tuple[Trace, list[int]]:
    """Greedy decoding, one step at a time, the way the sheet's formulas define it.

    The decoder's input starts with the prompt (decoder-only: the input text; encoder-
    decoder: the start token). Step t runs the model on what has been fed so far and
    feeds the token chosen at the last fed position to the next one, until `steps`
    tokens, the end token or max_seq. Positions never fed read as padding ("unused").
    Returns the trace of a run over the final sequence and the generated token ids.
    `fed` replays a given sequence instead (verify measures rounding on the same decode).
    """
    g, T, vocab = spec.generate, spec.model.max_seq, spec.out_vocab
    out: Trace = {}
    ids, memory = source(spec, text, out), None
    if spec.model.encoder_decoder:
        memory = encoder(spec, params, ids, out)
        prompt = [vocab.tokens.index(g.start)]
    else:
        prompt = list(ids[:min(len(text), T)])
    L = len(prompt)
    if fed is not None:
        return _replay(spec, params, fed, L, out, memory)
    fed = np.full(T, vocab.pad_id)
    fed[:L] = prompt
    labels, scored = teacher_labels(spec, L, out)
    generated: list[int] = []
    if g.target and L:  # teacher forcing: the target shifted right, all positions at once
        for p in range(L, min(L + len(g.target) - 1, T)):
            fed[p] = labels[p - 1]
    for p in range(L, 0 if g.target else min(L + g.steps, T)):
        if p == 0 or (generated and g.end and generated[-1] == vocab.tokens.index(g.end)):
            break
        step: Trace = {}
        decoder(spec, params, fed, step, memory)  # positions >= p are padding so far
        fed[p] = step["output.ids"][p - 1]
        generated.append(int(fed[p]))
    out["gen.ids"] = fed
    decoder(spec, params, fed, out, memory)
    teacher_loss(out, labels, scored)
    if g.target:  # what the model predicts where it is scored
        generated = [int(t) for t, s in zip(out["output.ids"], scored, strict=True) if s]
    return out, generated


def _replay(spec: Spec, params: Params, fed, prompt_len: int, out: Trace, memory):
    labels, scored = teacher_labels(spec, prompt_len, out)
    out["gen.ids"] = np.array(fed)
    decoder(spec, params, out["gen.ids"], out, memory)
    teacher_loss(out, labels, scored)
    return out, []


def teacher_labels(spec: Spec, prompt_len: int, out: Trace):  # -> labels [T], scored [T]
    """Teacher forcing's labels: position p should predict target[p - prompt_len + 1]."""
    g, T, vocab = spec.generate, spec.model.max_seq, spec.out_vocab
    chars = [g.target[k] if prompt_len and 0 <= (k := p - prompt_len + 1) < len(g.target)
             else None for p in range(T)]
    out["teacher.onehot"] = np.array([[float(c == t) for t in vocab.tokens] for c in chars])
    index = {t: i for i, t in enumerate(vocab.tokens)}
    labels = out["teacher.ids"] = np.array([index.get(c, vocab.pad_id) for c in chars])
    return labels, np.array([c is not None for c in chars])


def teacher_loss(out: Trace, labels, scored) -> None:
    """Cross-entropy -log p(label) of the probabilities shown, as log-softmax:
    ln(sum) + (max - x[label]), which stays finite where p underflows to 0, and keeps
    a small loss's digits however large the logits (see formulas.cross_entropy)."""
    x = out["logits.scaled"][np.arange(len(labels)), labels]
    loss = np.log(out["probs.sum"][:, 0]) + (out["probs.max"][:, 0] - x)
    out["teacher.scored"] = scored * 1.0
    out["teacher.loss"] = np.where(scored, loss, 0.0)
    out["teacher.mean_loss"] = np.array([[out["teacher.loss"].sum() / max(1, scored.sum())]])


def positional(spec: Spec, params: Params, p: str = "") -> np.ndarray | None:
    m = spec.model
    if m.positions == "learned":  # the first max_seq of wpe's n_positions rows
        return params[f"{p}wpe"][:m.max_seq]
    if m.positions == "sinusoidal":
        return sinusoidal(m.max_seq, m.d_model)
    if m.positions == "binary":
        return binary_code(m.binary_codes, m.binary_bits, m.d_model)
    return None


def block(spec: Spec, params: Params, x, p: str, out: Trace, memory=None):  # [T, d] -> [T, d]
    """One transformer block: attention, cross-attention over `memory` (decoder of an
    encoder-decoder), feed-forward; each with norm and residual."""
    m = spec.model
    x = sublayer(spec, params, x, p, "ln_1", "resid_attn", attention, out)
    if memory is not None:
        cross = partial(cross_attention, memory=memory)
        x = sublayer(spec, params, x, p, "ln_cross", "resid_cross", cross, out)
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
    """Self-attention; causal except in an encoder (blocks `enc.h.N`)."""
    m, a = spec.model, f"{p}.attn"
    qkv = out[f"{a}.c_attn"] = linear(x, params[f"{a}.c_attn.weight"],
                                      params.get(f"{a}.c_attn.bias"))
    da = m.d_attn
    y = heads(spec, params, out, a, qkv[:, :da], qkv[:, da:2 * da], qkv[:, 2 * da:],
              causal(spec, p))
    for h in range(m.n_head):
        pairwise(params, x, a, h, m, out, causal(spec, p))
    return y


def cross_attention(spec: Spec, params: Params, x, p: str, out: Trace, memory):
    """Queries from the decoder (`x`), keys and values from the encoder's output."""
    a = f"{p}.cross"  # [T, d], [T_src, d] -> [T, d]
    q = out[f"{a}.c_q"] = linear(x, params[f"{a}.c_q.weight"], params.get(f"{a}.c_q.bias"))
    kv = out[f"{a}.c_kv"] = linear(memory, params[f"{a}.c_kv.weight"],
                                   params.get(f"{a}.c_kv.bias"))
    da = spec.model.d_attn
    return heads(spec, params, out, a, q, kv[:, :da], kv[:, da:], False)


def causal(spec: Spec, p: str) -> bool:
    """Whether block `p`'s self-attention is masked: an encoder's never is."""
    return spec.model.causal and not p.startswith("enc.")


def heads(spec: Spec, params: Params, out: Trace, a: str, q, k, v, masked: bool):
    """Multi-head attention from q, k, v (all heads side by side) -> c_proj."""
    m = spec.model  # [T, da], [Tk, da], [Tk, da] -> [T, d]
    T, hs = q.shape[0], m.head_size
    mask = np.tril(np.ones((T, k.shape[0]), dtype=bool)) if masked else None
    outs = []
    for h in range(m.n_head):
        n, cols = f"{a}.head{h}", slice(h * hs, (h + 1) * hs)
        qh, kh, vh = (_record(out, f"{n}.{part}", t[:, cols])
                      for part, t in zip("qkv", (q, k, v), strict=True))
        scores = qh @ kh.T
        if m.scale:
            scores = scores * (1 / np.sqrt(hs))
        if masked:  # the sheet writes 0 where a later key is hidden, never reading it
            scores = np.where(mask, scores, 0.0)
        out[f"{n}.scores"] = scores
        out[f"{n}.max"], out[f"{n}.exp"], out[f"{n}.sum"], wts = softmax(scores, mask)
        out[f"{n}.weights"] = wts
        outs.append(_record(out, f"{n}.out", wts @ vh))
    cat = out[f"{a}.heads"] = np.concatenate(outs, axis=-1)
    return _record(out, f"{a}.c_proj",
                   linear(cat, params[f"{a}.c_proj.weight"], params.get(f"{a}.c_proj.bias")))


def pairwise(params: Params, x, a: str, h: int, m, out: Trace, masked: bool) -> None:
    """The same scores as a bilinear form of the inputs: q.k = x W_Q W_K^T x^T. With
    biases, x gets a column of ones and W_Q, W_K a row of biases, so the form is exact.
    Masked entries are 0, as in the head's scores."""  # x [T, d]
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
    if m.scale:
        scores = scores * (1 / np.sqrt(hs))
    if masked:
        scores = np.where(np.tril(np.ones(scores.shape, dtype=bool)), scores, 0.0)
    out[f"{n}.scores_qk"] = scores


def mlp(spec: Spec, params: Params, x, p: str, out: Trace):  # [T, d] -> [T, d]
    f = f"{p}.mlp"
    pre = out[f"{f}.c_fc"] = linear(x, params[f"{f}.c_fc.weight"], params.get(f"{f}.c_fc.bias"))
    act = out[f"{f}.act"] = (gelu if spec.model.activation == "gelu" else relu)(pre)
    return _record(out, f"{f}.c_proj",
                   linear(act, params[f"{f}.c_proj.weight"], params.get(f"{f}.c_proj.bias")))


def _record(out: Trace, name: str, value):
    out[name] = value
    return value
