"""Gradients of the reference model, written out by hand in NumPy.

The forward pass below is the reference's (`reference.py` computes each op; this file
only keeps what the backward pass needs), run on a batch of token ids [B, T]. Every
forward step returns its output and a `back` function: `back(dy, grads)` takes the
gradient of the loss with respect to the step's output, adds the gradients of the
step's weights to `grads` under the weights' names (`h.0.attn.c_attn.weight`, ...),
and returns the gradient with respect to the step's input. Each `*_backward` function
is the chain rule of one op, small enough to write cell by cell in a sheet later.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import reference
from .spec import Spec
from .weights import Params

Grads = dict[str, np.ndarray]
Back = Callable[[np.ndarray, Grads], np.ndarray]


# --- the chain rule of each op ----------------------------------------------------

def linear_backward(dy, x, w):  # [..., out], [..., in], [in, out] -> [..., in], [in, out], [out]
    """y = x @ w + b: dx = dy @ w^T, dw = x^T @ dy (summed over rows), db = sum of dy."""
    return dy @ w.T, _rows(x).T @ _rows(dy), _rows(dy).sum(axis=0)


def layer_norm_backward(dy, xhat, rstd, g):  # [..., d], [..., d], [..., 1], [d] -> dx, dg, db
    """y = xhat * g + b with xhat = (x - mean) * rstd."""
    dxhat = dy * g
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, _rows(dy * xhat).sum(axis=0), _rows(dy).sum(axis=0)


def gelu_backward(dy, x):  # the tanh form's derivative
    c = np.sqrt(2 / np.pi)
    t = np.tanh(c * (x + 0.044715 * x**3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2))


def relu_backward(dy, x):
    return dy * (x > 0)


def softmax_backward(dp, p):  # [..., n], [..., n] -> [..., n]; masked entries have p = 0
    """p = softmax(s): ds = p * (dp - sum(dp * p))."""
    return p * (dp - np.sum(dp * p, axis=-1, keepdims=True))


def cross_entropy(logits, targets):  # [B, T, V], [B, T] -> loss, dlogits [B, T, V]
    """Mean of -log p(target) over the positions whose target is not -1."""
    keep = targets >= 0
    t = np.where(keep, targets, 0)[..., None]
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    logp = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    n = max(int(keep.sum()), 1)
    loss = -np.sum(np.take_along_axis(logp, t, axis=-1)[..., 0] * keep) / n
    dlogits = np.exp(logp)
    np.put_along_axis(dlogits, t, np.take_along_axis(dlogits, t, axis=-1) - 1, axis=-1)
    return loss, dlogits * keep[..., None] / n


def _rows(a):  # [..., n] -> [rows, n]
    return a.reshape(-1, a.shape[-1])


# --- the forward pass, keeping what the backward pass needs ------------------------

def dense(params: Params, name: str, x):  # [..., in] -> [..., out]
    w, b = params[f"{name}.weight"], params.get(f"{name}.bias")

    def back(dy, grads):
        dx, grads[f"{name}.weight"], db = linear_backward(dy, x, w)
        if b is not None:
            grads[f"{name}.bias"] = db
        return dx

    return reference.linear(x, w, b), back


def norm(params: Params, name: str, x, eps: float):  # [..., d] -> [..., d]
    g, b = params[f"{name}.weight"], params[f"{name}.bias"]
    mean, _, rstd, y = reference.layer_norm(x, g, b, eps)
    xhat = (x - mean) * rstd

    def back(dy, grads):
        dx, grads[f"{name}.weight"], grads[f"{name}.bias"] = layer_norm_backward(dy, xhat, rstd, g)
        return dx

    return y, back


def attend(q, k, v, mask, scale: float):  # [B, T, hs] x 3 -> [B, T, hs], back(dy) -> dq, dk, dv
    """One head: weights = softmax(q k^T * scale, masked), out = weights @ v."""
    *_, w = reference.softmax(q @ k.swapaxes(-1, -2) * scale, mask)

    def back(dy):
        dv = w.swapaxes(-1, -2) @ dy
        ds = softmax_backward(dy @ v.swapaxes(-1, -2), w) * scale
        return ds @ k, ds.swapaxes(-1, -2) @ q, dv

    return w @ v, back


def attention(spec: Spec, params: Params, x, p: str):  # [B, T, d] -> [B, T, d]
    m, a = spec.model, f"{p}.attn"
    qkv, back_c_attn = dense(params, f"{a}.c_attn", x)
    T, hs, da = x.shape[-2], m.head_size, m.d_attn
    mask = np.tril(np.ones((T, T), dtype=bool)) if m.causal else None
    scale = 1 / np.sqrt(hs) if m.scale else 1.0
    parts = [(slice(h * hs, (h + 1) * hs), slice(da + h * hs, da + (h + 1) * hs),
              slice(2 * da + h * hs, 2 * da + (h + 1) * hs)) for h in range(m.n_head)]
    outs, backs = zip(*(attend(qkv[..., q], qkv[..., k], qkv[..., v], mask, scale)
                        for q, k, v in parts), strict=True)
    y, back_c_proj = dense(params, f"{a}.c_proj", np.concatenate(outs, axis=-1))

    def back(dy, grads):
        dheads = back_c_proj(dy, grads)
        dqkv = np.zeros_like(qkv)
        for h, (back_head, (q, k, v)) in enumerate(zip(backs, parts, strict=True)):
            dqkv[..., q], dqkv[..., k], dqkv[..., v] = back_head(dheads[..., h * hs:(h + 1) * hs])
        return back_c_attn(dqkv, grads)

    return y, back


def mlp(spec: Spec, params: Params, x, p: str):  # [B, T, d] -> [B, T, d]
    gelu = spec.model.activation == "gelu"
    pre, back_c_fc = dense(params, f"{p}.mlp.c_fc", x)
    y, back_c_proj = dense(params, f"{p}.mlp.c_proj",
                           reference.gelu(pre) if gelu else reference.relu(pre))

    def back(dy, grads):
        dact = back_c_proj(dy, grads)
        return back_c_fc(gelu_backward(dact, pre) if gelu else relu_backward(dact, pre), grads)

    return y, back


def sublayer(spec: Spec, params: Params, x, p: str, ln: str, fn):  # [B, T, d] -> [B, T, d]
    """Pre-norm x + f(ln(x)), post-norm ln(x + f(x)), or either without norm or residual."""
    m = spec.model
    pre, post = m.norm == "pre", m.norm == "post"
    h, back_ln = norm(params, f"{p}.{ln}", x, m.ln_eps) if pre else (x, None)
    y, back_fn = fn(spec, params, h, p)
    if m.residual:
        y = x + y
    if post:
        y, back_ln = norm(params, f"{p}.{ln}", y, m.ln_eps)

    def back(dy, grads):
        if post:
            dy = back_ln(dy, grads)
        dh = back_fn(dy, grads)
        if pre:
            dh = back_ln(dh, grads)
        return dy + dh if m.residual else dh

    return y, back


def forward(spec: Spec, params: Params, ids):  # [B, T] -> logits [B, T, V], back
    """The reference model on a batch of token ids; `back(dlogits)` returns all gradients."""
    m, head = spec.model, spec.head
    x = params["wte"][ids]
    pe = reference.positional(spec, params)
    if pe is not None:
        x = x + pe[: ids.shape[-1]]
    backs: list[Back] = []
    for i in range(m.n_layer):
        x, back = sublayer(spec, params, x, f"h.{i}", "ln_1", attention)
        backs.append(back)
        if m.mlp:
            x, back = sublayer(spec, params, x, f"h.{i}", "ln_2", mlp)
            backs.append(back)
    if m.norm == "pre":
        x, back = norm(params, "ln_f", x, m.ln_eps)
        backs.append(back)
    w = params["wte"].T if head.tied else params["lm_head.weight"]
    logits = reference.linear(x, w, params.get("lm_head.bias"))

    def backward(dlogits) -> Grads:
        grads: Grads = {}
        dx, dw, db = linear_backward(dlogits, x, w)
        grads["wte" if head.tied else "lm_head.weight"] = dw.T if head.tied else dw
        if head.bias:
            grads["lm_head.bias"] = db
        for back in reversed(backs):
            dx = back(dx, grads)
        if m.positions == "learned":
            grads["wpe"] = np.zeros_like(params["wpe"])
            grads["wpe"][: ids.shape[-1]] = dx.reshape(-1, *dx.shape[-2:]).sum(axis=0)
        dwte = np.zeros_like(params["wte"])
        np.add.at(dwte, ids, dx)  # each token's row gathers the gradient of its positions
        grads["wte"] = grads.get("wte", 0) + dwte
        return grads

    return logits, backward


def loss_and_grads(spec: Spec, params: Params, ids, targets):  # [B, T], [B, T] -> loss, grads
    """Cross-entropy of the model's predictions and its gradient for every weight."""
    logits, backward = forward(spec, params, ids)
    loss, dlogits = cross_entropy(logits, targets)
    return loss, backward(dlogits), logits
