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
must fit it. The number of heads cannot be read from any shape: it is given, or read
from the `config.json` of a Hugging Face folder (`read_folder`), which also gives the
LayerNorm epsilon, the activation and whether scores are scaled, and whose sizes must
agree with the shapes (`check_config`). Its tokenizer files (vocab.json, merges.txt) go
into the spec as a byte-level BPE (see bpe.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import bpe
from .weights import NUMBERS, Params, read_npz, source_array

LAYOUTS = ("conv1d", "linear")
SKIPPED = re.compile(r"h\.\d+\.attn\.(masked_)?bias$")  # causal-mask buffers, not weights
INSTALL_HINT = "pip install 'xlformer[import]'"
WEIGHTS = "model.safetensors"  # a Hugging Face folder's weights
# config.json's activation_function -> the spec's activation. gelu_new and
# gelu_pytorch_tanh are the tanh form the spec computes; "gelu" (erf) is not.
ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}


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


@dataclass(frozen=True)
class Config:
    """What the spec takes from a model's config (GPT-2's defaults for a bare file)."""

    n_head: int
    ln_eps: float = 1e-5
    activation: str = "gelu"  # the spec's: gelu (tanh form) | relu
    scale: bool = True  # scores / sqrt(head_size)


@dataclass(frozen=True)
class Folder:
    """A Hugging Face GPT-2 folder as it is: weights, config.json, tokenizer files."""

    tensors: dict[str, np.ndarray]
    config: Config
    raw: dict  # config.json as read, for check_config
    vocab: Path | None  # vocab.json
    merges: Path | None  # merges.txt, only with vocab.json
    notes: tuple[str, ...]  # what was left out, for `note:` lines


def read_folder(folder: Path) -> Folder:
    """config.json, model.safetensors and, when present, vocab.json with merges.txt."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        if (folder / f"{WEIGHTS}.index.json").is_file():
            raise CheckpointError(f"{folder} holds a sharded checkpoint ({WEIGHTS}.index.json),"
                                  f" which xlformer does not read; save it as one {WEIGHTS}")
        if (folder / "pytorch_model.bin").is_file():
            raise CheckpointError(f"{folder} has pytorch_model.bin but no {WEIGHTS}: reading "
                                  "it needs torch (it is a pickle), which xlformer does not "
                                  "use; save the model with safe_serialization=True")
        raise CheckpointError(f"{folder} has no {WEIGHTS} (a Hugging Face model folder "
                              "holds its weights there)")
    raw = read_config(folder / "config.json")
    vocab, merges = (p if p.is_file() else None
                     for p in (folder / "vocab.json", folder / "merges.txt"))
    notes = []
    if vocab is not None and merges is None:
        notes.append(f"{folder} has vocab.json but no merges.txt: the workbook shows each "
                     "id's token, but text cannot be tokenized (give --ids)")
    if vocab is None and merges is not None:
        notes.append(f"{folder} has merges.txt but no vocab.json: merges.txt is not used, "
                     "and tokens are named by their ids")
        merges = None
    return Folder(read_tensors(folder / WEIGHTS), _config(raw), raw, vocab, merges,
                  tuple(notes))


def read_config(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} has no config.json (the model's heads, "
                              "positions and LayerNorm epsilon)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file: {e}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must be a JSON object of settings")
    return raw


def _config(raw: dict) -> Config:
    """The spec's settings from config.json; a setting the spec cannot express is an error
    naming its key. Keys that only matter to training (dropout, initializer_range) or to
    Hugging Face's code are not read."""
    def number(key: str, kind: type, default=None):
        value = raw.get(key, default)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, kind)):
            what = "missing" if key not in raw else repr(value)
            raise CheckpointError(f"config.json's {key} must be a positive "
                                  f"{'whole number' if kind is int else 'number'}, not {what}")
        if not value > 0:
            raise CheckpointError(f"config.json's {key} must be positive, not {value}")
        return value

    if raw.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"config.json's model_type is {raw['model_type']!r}; xlformer "
                              "imports GPT-2 (model_type 'gpt2')")
    act = raw.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"config.json's activation_function {act!r} is not one the "
                              f"spec computes ({', '.join(ACTIVATIONS)}; the spec's gelu is "
                              "the tanh form)")
    for key in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if raw.get(key, False) is not False:
            raise CheckpointError(f"config.json's {key} = {json.dumps(raw[key])} is not "
                                  "something the spec can express")
    scale = raw.get("scale_attn_weights", True)
    if not isinstance(scale, bool):
        raise CheckpointError(f"config.json's scale_attn_weights must be true or false, "
                              f"not {scale!r}")
    return Config(number("n_head", int), float(number("layer_norm_epsilon", float, 1e-5)),
                  ACTIVATIONS[act], scale)


def check_config(folder: Folder, model: Imported) -> None:
    """config.json's sizes against the weights' shapes: they must agree."""
    raw, n_head = folder.raw, folder.config.n_head
    found = {"n_embd": (model.d_model, "wte has {} columns"),
             "n_layer": (model.n_layer, "the weights have {} layers"),
             "n_positions": (model.n_ctx, "wpe has {} rows"),
             "n_ctx": (model.n_ctx, "wpe has {} rows"),
             "vocab_size": (model.vocab_size, "wte has {} rows"),
             "n_inner": (model.d_ff, "mlp.c_fc has {} outputs")}
    for key, (value, what) in found.items():
        if raw.get(key) is not None and raw[key] != value:
            raise CheckpointError(f"config.json says {key} = {json.dumps(raw[key])}, but "
                                  f"{what.format(value)}")
    if model.d_model % n_head:
        raise CheckpointError(f"config.json's n_head {n_head} does not divide d_model "
                              f"{model.d_model}")
    tie = raw.get("tie_word_embeddings", True)
    if tie is False and model.tied and "lm_head.weight" not in folder.tensors:
        raise CheckpointError("config.json says tie_word_embeddings = false, but the "
                              "weights have no lm_head.weight")
    if tie is True and not model.tied:
        raise CheckpointError("config.json says tie_word_embeddings = true, but "
                              "lm_head.weight differs from wte")


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
    """A JSON list of tokens in id order, or a JSON object token -> id (GPT-2's vocab.json),
    of `size` tokens (wte's rows)."""
    try:
        data = bpe.read_vocab(path)
    except bpe.TokenizerError as e:
        raise CheckpointError(str(e)) from None
    if len(data) != size:
        raise CheckpointError(f"vocabulary {path} has {len(data)} tokens; the checkpoint's "
                              f"wte has {size} rows")
    return data


def spec_toml(name: str, model: Imported, config: Config, max_seq: int,
              tokens: list[str] | None, typed: str | tuple[int, ...], weights_file: str,
              origin: str, bpe_files: tuple[str, str | None] | None = None) -> str:
    """The spec of an imported model, as TOML that `xlformer build` reads.

    `typed` is the input text, or token ids (a tuple) for a model that reads ids: one
    without a vocabulary (`tokens` None: each token is its id), with tokens longer than
    a character, or with a byte-level BPE's files (`bpe_files`: vocab.json and merges.txt
    or None, named relative to the spec)."""
    if isinstance(typed, tuple):
        shown = "ids = [" + ", ".join(map(str, typed)) + "]"
        if bpe_files is not None:
            vocab = ['input = "ids"', f"bpe = {_q(bpe_files[0])}",
                     *([f"merges = {_q(bpe_files[1])}"] if bpe_files[1] else [])]
        else:
            vocab = ['input = "ids"', f"size = {model.vocab_size}" if tokens is None else
                     "tokens = [" + ", ".join(_q(tok) for tok in tokens) + "]"]
        pad = None  # the first token; a GPT-2 vocabulary has no padding token of its own
    else:
        shown = f"text = {_q(typed)}"
        vocab = ["tokens = [" + ", ".join(_q(tok) for tok in tokens) + "]"]
        pad = " " if " " in tokens else tokens[0]
    act = "tanh-GELU" if config.activation == "gelu" else "ReLU"
    lines = [
        f"name = {_q(name)}",
        f"description = {_q(f'Imported from {origin}.')}",
        shown,
        "",
        f"# Imported by `xlformer import` ({model.layout} layout); GPT-2's architecture:",
        f"# pre-norm, {act}, learned positions, causal mask, LayerNorm eps {_float(config.ln_eps)}"
        + ("." if config.scale else "; scores not scaled."),
        "",
        "[vocab]",
        *vocab,
        *([f"pad = {_q(pad)}"] if pad is not None else []),
        "",
        "[model]",
        f"max_seq = {max_seq}", f"n_positions = {model.n_ctx}",
        f"d_model = {model.d_model}", f"n_head = {config.n_head}",
        f"n_layer = {model.n_layer}", f"d_ff = {model.d_ff}",
        f"activation = {_q(config.activation)}", 'norm = "pre"',
        f"ln_eps = {_float(config.ln_eps)}", 'positions = "learned"', "causal = true",
        f"scale = {str(config.scale).lower()}", "residual = true",
        f"bias = {str(model.bias).lower()}",
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


def _float(x: float) -> str:
    """A float as TOML reads it, shortest: 1e-5, not 1e-05."""
    return repr(float(x)).replace("e-0", "e-").replace("e+0", "e+")


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string


def for_spec(model: Imported) -> Params:
    """The weights of the imported spec: all of them, wpe with all its n_positions rows
    (the workbook reads the first max_seq)."""
    return dict(model.params)
