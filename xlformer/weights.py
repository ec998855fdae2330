"""Weights: hand-built for named tasks, seeded random, or loaded from `.npz`.

Names follow GPT-2/nanoGPT. Every matrix is stored (in, out), so a linear layer is
`x @ w + b` (GPT-2's Conv1D layout); `wte` is (vocab, d_model), one row per token.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .spec import Spec, SpecError

Params = dict[str, np.ndarray]


class WeightsError(ValueError):
    """Weights that do not fit the spec; the message names the array."""


def expected_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """Every array the spec needs, with its shape, in a fixed order."""
    m, V = spec.model, len(spec.vocab)
    shapes: dict[str, tuple[int, ...]] = {"wte": (V, m.d_model)}
    if m.positions == "learned":
        shapes["wpe"] = (m.max_seq, m.d_model)
    for i in range(m.n_layer):
        p = f"h.{i}."
        if m.norm != "none":
            shapes |= _norm(p + "ln_1", m.d_model)
        shapes |= _linear(p + "attn.c_attn", m.d_model, 3 * m.d_attn, m.bias)
        shapes |= _linear(p + "attn.c_proj", m.d_attn, m.d_model, m.bias)
        if m.mlp:
            if m.norm != "none":
                shapes |= _norm(p + "ln_2", m.d_model)
            shapes |= _linear(p + "mlp.c_fc", m.d_model, m.d_ff, m.bias)
            shapes |= _linear(p + "mlp.c_proj", m.d_ff, m.d_model, m.bias)
    if m.norm == "pre":
        shapes |= _norm("ln_f", m.d_model)
    if not spec.head.tied:
        shapes["lm_head.weight"] = (m.d_model, V)
    if spec.head.bias:
        shapes["lm_head.bias"] = (V,)
    return shapes


def _norm(name: str, d: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (d,), f"{name}.bias": (d,)}


def _linear(name: str, n_in: int, n_out: int, bias: bool) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{name}.weight": (n_in, n_out)}
    if bias:
        shapes[f"{name}.bias"] = (n_out,)
    return shapes


def make_weights(spec: Spec, file: Path | None = None) -> Params:
    """The spec's weights as the workbook holds them; `file` (an .npz) overrides the spec."""
    return {name: to_sheet_precision(value) for name, value in _source(spec, file).items()}


def to_sheet_precision(value: np.ndarray) -> np.ndarray:
    """Round to 15 significant digits: what spreadsheets show and LibreOffice saves
    (openpyxl itself writes 16). The reference then runs on exactly the numbers that
    every engine reads from the file."""
    flat = [float(f"{x:.15g}") for x in np.asarray(value, dtype=np.float64).ravel()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(value))


def _source(spec: Spec, file: Path | None) -> Params:
    if file is not None:
        return load_npz(spec, Path(file))
    w = spec.weights
    if w.source == "npz":
        return load_npz(spec, w.file)
    if w.source == "random":
        return random_weights(spec, w.seed, w.std)
    if w.task not in TASKS:
        raise SpecError(f"weights.task must be one of {', '.join(TASKS)}, not {w.task!r}")
    return TASKS[w.task](spec)


def random_weights(spec: Spec, seed: int, std: float) -> Params:
    """normal(0, std) everywhere, LayerNorm gains around 1."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in expected_shapes(spec).items():
        noise = rng.normal(0.0, std, size=shape)
        is_gain = ".ln_" in f".{name}" and name.endswith(".weight")
        params[name] = 1.0 + noise if is_gain else noise
    return params


def load_npz(spec: Spec, path: Path) -> Params:
    """Load and check an .npz holding exactly the arrays of `expected_shapes`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} does not exist") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise WeightsError(f"weights file {path} is not a readable .npz: {e}") from None
    check_params(spec, arrays, str(path))
    return arrays


def check_params(spec: Spec, params: Params, origin: str) -> None:
    want = expected_shapes(spec)
    for name, shape in want.items():
        if name not in params:
            raise WeightsError(f"{origin} lacks array '{name}' of shape {shape}")
        found = tuple(params[name].shape)
        if found != shape:
            raise WeightsError(f"{origin}: array '{name}' has shape {found}, "
                               f"the spec needs {shape}")
        if not np.all(np.isfinite(params[name])):
            raise WeightsError(f"{origin}: array '{name}' holds NaN or infinite values")
    extra = sorted(set(params) - set(want))
    if extra:
        raise WeightsError(f"{origin} has arrays the spec does not use: {', '.join(extra)}")


# --- hand-built tasks --------------------------------------------------------

def reverse_weights(spec: Spec) -> Params:
    """One head that reverses the input; see templates/reverse.toml for the reasoning.

    Token embedding: [character code, 0, ...]; the binary positional code fills the
    last `bits` dimensions with +-1. Keys read the code, queries read minus the code,
    so position p's query matches exactly the key whose code is the complement of its
    own: the mirror position. Values carry the character code, and the head turns the
    attended code c back into a token with logits k*(2*a_v*c - a_v^2), which is
    k*(c^2 - (c - a_v)^2): the argmax is the token whose code a_v is nearest to c.
    """
    m = spec.model
    _require_reverse_shape(spec)
    d, bits, s = m.d_model, m.binary_bits, spec.weights.sharpness
    codes = np.array([ord(t) for t in spec.vocab.tokens], dtype=np.float64)
    params = {name: np.zeros(shape) for name, shape in expected_shapes(spec).items()}
    params["wte"][:, 0] = codes
    c_attn = params["h.0.attn.c_attn.weight"]  # columns: [q | k | v], d each
    for b in range(d - bits, d):
        c_attn[b, b] = -s  # query: minus the position code
        c_attn[b, d + b] = s  # key: the position code
    c_attn[0, 2 * d] = 1.0  # value: the character code
    params["h.0.attn.c_proj.weight"] = np.eye(d)
    params["lm_head.weight"][0, :] = 2 * s * codes
    params["lm_head.bias"][:] = -s * codes**2
    return params


def _require_reverse_shape(spec: Spec) -> None:
    m, h = spec.model, spec.head
    wanted = {
        "model.n_layer = 1": m.n_layer == 1,
        "model.n_head = 1": m.n_head == 1,
        "model.head_size = model.d_model": m.head_size == m.d_model,
        "model.positions = 'binary'": m.positions == "binary",
        "model.norm = 'none'": m.norm == "none",
        "model.mlp = false": not m.mlp,
        "model.residual = false": not m.residual,
        "model.causal = false": not m.causal,
        "head.tied = false and head.bias = true": not h.tied and h.bias,
        "model.d_model > the code's bits": m.positions != "binary" or m.d_model > m.binary_bits,
    }
    missing = [k for k, ok in wanted.items() if not ok]
    if missing:
        raise SpecError(f"weights.task 'reverse' needs {', '.join(missing)}")
    top = (1 << m.binary_bits) - 1
    codes = m.binary_codes
    if any(codes[p] ^ codes[-1 - p] != top for p in range(len(codes))):
        raise SpecError("weights.task 'reverse' needs model.binary_codes whose mirror "
                        "positions have complementary bits")


TASKS = {"reverse": reverse_weights}
