"""GPT-2-style checkpoints (.npz or .safetensors) -> a spec and weights in xlformer's names.

The tensors are named as nanoGPT and the usual GPT-2 implementations name them:
`transformer.wte.weight`, `transformer.wpe.weight`, `transformer.h.N.ln_1.weight`,
`transformer.h.N.attn.c_attn.weight` (Q, K, V packed along the output dimension),
`transformer.h.N.attn.c_proj.*`, `transformer.h.N.ln_2.*`, `transformer.h.N.mlp.c_fc.*`,
`transformer.h.N.mlp.c_proj.*`, `transformer.ln_f.*` and `lm_head.weight` (tied to
`wte`: absent or equal to it; a different one makes an untied head). The `transformer.`
prefix may be missing (Hugging Face's GPT2Model); the causal-mask buffers
`attn.bias`/`attn.masked_bias` are skipped.

Matrices come in one of two layouts: GPT-2's Conv1D (in, out), which is xlformer's, or
PyTorch's nn.Linear (out, in). A square matrix (c_proj when d_ff = d_model, and always
attn.c_proj) cannot tell them apart, so the layout is read from `c_attn.weight`, which
is (d, 3d) or (3d, d) and never square, or given by the user, and then every matrix
must fit it. The number of heads cannot be read from any shape and is given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .weights import NUMBERS, Params, read_npz, source_array

LAYOUTS = ("conv1d", "linear")
SKIPPED = re.compile(r"h\.\d+\.attn\.(masked_)?bias$")  # causal-mask buffers, not weights
INSTALL_HINT = "pip install 'xlformer[import]'"


class CheckpointError(ValueError):
    """A checkpoint that is not a GPT-2-style model xlformer can build; names the tensor."""


@dataclass(frozen=True)
class Imported:
    params: Params  # xlformer's names, matrices (in, out)
    n_layer: int
    d_model: int
    d_ff: int
    n_ctx: int
    vocab_size: int
    bias: bool  # c_attn, c_proj, c_fc biases present
    tied: bool
    layout: str


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in an .npz or .safetensors file, by name: float32 and float16 as
    they are (the imported .npz keeps them so), any other numbers as float64."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors import SafetensorError
            from safetensors.numpy import load_file
        except ModuleNotFoundError:
            raise CheckpointError(f"reading .safetensors needs the safetensors package: "
                                  f"{INSTALL_HINT}") from None
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable .safetensors file: {e}") from None
        except TypeError as e:  # a dtype NumPy lacks: bfloat16, float8
            raise CheckpointError(f"{path} holds tensors NumPy cannot read ({e}); save "
                                  "them as float32 or float16") from None
    elif path.suffix == ".npz":
        tensors = read_npz(path, "checkpoint", "checkpoint", CheckpointError)
    else:
        raise CheckpointError(f"checkpoint {path} must end in .npz or .safetensors")
    for name, value in tensors.items():
        if value.dtype.kind not in NUMBERS:  # complex: an .npz's are refused as it is read
            raise CheckpointError(f"tensor '{name}' of {path} holds {value.dtype} values, "
                                  "not real numbers")
    return {k: source_array(v) for k, v in tensors.items()}


def convert(tensors: dict[str, np.ndarray], layout: str | None = None) -> Imported:
    """Rename, check and transpose a GPT-2-style state dict into xlformer's weights."""
    t = {_strip(k): v for k, v in tensors.items() if not SKIPPED.search(_strip(k))}
    for name in ("wte.weight", "wpe.weight", "h.0.attn.c_attn.weight"):
        if name not in t:
            raise CheckpointError(f"the checkpoint lacks 'transformer.{name}'; "
                                  "is it a GPT-2-style model?")
    V, d = _shape(t, "wte.weight", 2)
    n_ctx = _shape(t, "wpe.weight", 2)[0]
    layout = layout or _detect_layout(t["h.0.attn.c_attn.weight"].shape, d)
    n_layer = 1 + max(int(m.group(1)) for k in t if (m := re.match(r"h\.(\d+)\.", k)))
    _matrix(t, "h.0.attn.c_attn.weight", layout, d, 3 * d)
    d_ff = _matrix(t, "h.0.mlp.c_fc.weight", layout, d, None).shape[1]
    bias = "h.0.attn.c_attn.bias" in t
    used, params = {"wte.weight", "wpe.weight"}, {"wte": t["wte.weight"]}
    _expect(t, "wpe.weight", (n_ctx, d))
    params["wpe"] = t["wpe.weight"]
    for i in range(n_layer):
        p = f"h.{i}."
        for name, n_in, n_out in (("attn.c_attn", d, 3 * d), ("attn.c_proj", d, d),
                                  ("mlp.c_fc", d, d_ff), ("mlp.c_proj", d_ff, d)):
            params[p + name + ".weight"] = _matrix(t, p + name + ".weight", layout, n_in, n_out)
            used.add(p + name + ".weight")
            if bias:
                params[p + name + ".bias"] = _expect(t, p + name + ".bias", (n_out,))
                used.add(p + name + ".bias")
        for ln in ("ln_1", "ln_2"):
            params |= _norm(t, p + ln, d, used)
    params |= _norm(t, "ln_f", d, used)
    head = t.get("lm_head.weight")
    used.add("lm_head.weight")
    tied = head is None or (head.shape == (V, d) and np.array_equal(head, t["wte.weight"]))
    if not tied:
        params["lm_head.weight"] = _expect(t, "lm_head.weight", (V, d)).T
    extra = sorted(set(t) - used)
    if extra:
        raise CheckpointError(f"the checkpoint has tensors a GPT-2-style model of {n_layer} "
                              f"layers does not use: {', '.join(extra[:5])}")
    return Imported(params, n_layer, d, d_ff, n_ctx, V, bias, tied, layout)


def _strip(name: str) -> str:
    return name.removeprefix("transformer.")


def _shape(t, name: str, ndim: int) -> tuple[int, ...]:
    if t[name].ndim != ndim:
        raise CheckpointError(f"'{name}' has shape {t[name].shape}, not a {ndim}-d array")
    return t[name].shape


def _expect(t, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in t:
        raise CheckpointError(f"the checkpoint lacks '{_full(name)}' of shape {shape}")
    if t[name].shape != shape:
        raise CheckpointError(f"'{_full(name)}' has shape {t[name].shape}, "
                              f"the model needs {shape}")
    if not np.all(np.isfinite(t[name])):
        raise CheckpointError(f"'{_full(name)}' holds NaN or infinite values")
    return t[name]


def _full(name: str) -> str:
    return name if name.startswith("lm_head") else f"transformer.{name}"


def _detect_layout(shape: tuple[int, ...], d: int) -> str:
    if shape == (d, 3 * d):
        return "conv1d"
    if shape == (3 * d, d):
        return "linear"
    raise CheckpointError(f"'transformer.h.0.attn.c_attn.weight' has shape {shape}: neither "
                          f"Conv1D ({d}, {3 * d}) nor nn.Linear ({3 * d}, {d}) for "
                          f"d_model {d} (from wte)")


def _matrix(t, name: str, layout: str, n_in: int, n_out: int | None) -> np.ndarray:
    """The (in, out) matrix; n_out None: whatever the layout says it is."""
    if name not in t:
        raise CheckpointError(f"the checkpoint lacks '{_full(name)}'")
    w = t[name] if layout == "conv1d" else t[name].T
    if w.ndim != 2 or w.shape[0] != n_in or (n_out is not None and w.shape[1] != n_out):
        want = f"({n_in}, {n_out or 'd_ff'})"
        if layout == "linear":
            want = f"({n_out or 'd_ff'}, {n_in})"
        raise CheckpointError(f"'{_full(name)}' has shape {t[name].shape}; in the {layout} "
                              f"layout it must be {want}")
    return _expect({name: w}, name, w.shape)


def _norm(t, name: str, d: int, used: set[str]) -> Params:
    """LayerNorm gain and bias; a model without biases (nanoGPT bias=False) gets zeros."""
    used |= {f"{name}.weight", f"{name}.bias"}
    gain = _expect(t, f"{name}.weight", (d,))
    bias = (_expect(t, f"{name}.bias", (d,)) if f"{name}.bias" in t
            else np.zeros(d, dtype=gain.dtype))
    return {f"{name}.weight": gain, f"{name}.bias": bias}


def read_vocab(path: Path, size: int) -> list[str]:
    """A JSON list of tokens in id order, or a JSON object token -> id (GPT-2's vocab.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"vocabulary {path} is not a readable JSON file: {e}") from None
    if isinstance(data, dict):
        if sorted(data.values()) != list(range(len(data))):
            raise CheckpointError(f"vocabulary {path}: the ids must be 0..{len(data) - 1}")
        data = sorted(data, key=data.__getitem__)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise CheckpointError(f"vocabulary {path} must be a JSON list of strings "
                              "or an object of token -> id")
    if len(data) != size:
        raise CheckpointError(f"vocabulary {path} has {len(data)} tokens; the checkpoint's "
                              f"wte has {size} rows")
    return data


def spec_toml(name: str, model: Imported, n_head: int, max_seq: int,
              tokens: list[str] | None, typed: str | tuple[int, ...], weights_file: str,
              origin: str) -> str:
    """The spec of an imported model, as TOML that `xlformer build` reads.

    `typed` is the input text, or token ids (a tuple) for a model that reads ids: one
    without a vocabulary (`tokens` None: each token is its id) or with tokens longer
    than a character."""
    if isinstance(typed, tuple):
        shown = "ids = [" + ", ".join(map(str, typed)) + "]"
        vocab = ['input = "ids"', f"size = {model.vocab_size}" if tokens is None else
                 "tokens = [" + ", ".join(_q(tok) for tok in tokens) + "]"]
        pad = None  # the first token; a GPT-2 vocabulary has no padding token of its own
    else:
        shown = f"text = {_q(typed)}"
        vocab = ["tokens = [" + ", ".join(_q(tok) for tok in tokens) + "]"]
        pad = " " if " " in tokens else tokens[0]
    lines = [
        f"name = {_q(name)}",
        f"description = {_q(f'Imported from {origin}.')}",
        shown,
        "",
        f"# Imported by `xlformer import` ({model.layout} layout); GPT-2's architecture:",
        "# pre-norm, tanh-GELU, learned positions, causal mask, LayerNorm eps 1e-5.",
        "",
        "[vocab]",
        *vocab,
        *([f"pad = {_q(pad)}"] if pad is not None else []),
        "",
        "[model]",
        f"max_seq = {max_seq}", f"n_positions = {model.n_ctx}",
        f"d_model = {model.d_model}", f"n_head = {n_head}",
        f"n_layer = {model.n_layer}", f"d_ff = {model.d_ff}", 'activation = "gelu"',
        'norm = "pre"', "ln_eps = 1e-5", 'positions = "learned"', "causal = true",
        "scale = true", "residual = true", f"bias = {str(model.bias).lower()}",
        "",
        "[head]",
        f"tied = {str(model.tied).lower()}",
        "bias = false",
        "",
        "[weights]",
        'source = "npz"',
        f"file = {_q(weights_file)}",
    ]
    return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string


def for_spec(model: Imported) -> Params:
    """The weights of the imported spec: all of them, wpe with all its n_positions rows
    (the workbook reads the first max_seq)."""
    return dict(model.params)
