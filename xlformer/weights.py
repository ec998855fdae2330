"""Weights: hand-built for named tasks, seeded random, or loaded from `.npz`.

Names follow GPT-2/nanoGPT. Every matrix is stored (in, out), so a linear layer is
`x @ w + b` (GPT-2's Conv1D layout); `wte` is (vocab, d_model), one row per token.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .spec import Spec, SpecError

Params = dict[str, np.ndarray]


class WeightsError(ValueError):
    """Weights that do not fit the spec; the message names the array."""


def expected_shapes(spec: Spec) -> dict[str, tuple[int, ...]]:
    """Every array the spec needs, with its shape, in a fixed order.

    A decoder-only model uses GPT-2's names (`wte`, `h.0.attn.c_attn.weight`, ...); an
    encoder-decoder prefixes its halves with `enc.` and `dec.`, and each decoder block
    adds cross-attention (`dec.h.0.cross.c_q`, `.c_kv`, `.c_proj`, norm `ln_cross`).
    """
    m = spec.model
    shapes: dict[str, tuple[int, ...]] = {}
    if m.encoder_decoder:
        shapes |= _stack(spec, "enc.", len(spec.vocab), m.n_enc_layer, cross=False)
    shapes |= _stack(spec, stack_prefix(spec, "dec"), len(spec.out_vocab), m.n_layer,
                     cross=m.encoder_decoder)
    if not spec.head.tied:
        shapes["lm_head.weight"] = (m.d_model, len(spec.out_vocab))
    if spec.head.bias:
        shapes["lm_head.bias"] = (len(spec.out_vocab),)
    return shapes


def stack_prefix(spec: Spec, part: str) -> str:
    """'enc.' or 'dec.' in an encoder-decoder; '' for the one stack of a decoder-only model."""
    return f"{part}." if spec.model.encoder_decoder else ""


def _stack(spec: Spec, p: str, V: int, n_layer: int, cross: bool) -> dict[str, tuple[int, ...]]:
    """Embeddings, blocks and final norm of one stack of blocks."""
    m = spec.model
    norm = m.norm != "none"
    shapes: dict[str, tuple[int, ...]] = {f"{p}wte": (V, m.d_model)}
    if m.positions == "learned":
        shapes[f"{p}wpe"] = (m.positions_table, m.d_model)
    for i in range(n_layer):
        b = f"{p}h.{i}."
        if norm:
            shapes |= _norm(b + "ln_1", m.d_model)
        shapes |= _linear(b + "attn.c_attn", m.d_model, 3 * m.d_attn, m.bias)
        shapes |= _linear(b + "attn.c_proj", m.d_attn, m.d_model, m.bias)
        if cross:
            if norm:
                shapes |= _norm(b + "ln_cross", m.d_model)
            shapes |= _linear(b + "cross.c_q", m.d_model, m.d_attn, m.bias)
            shapes |= _linear(b + "cross.c_kv", m.d_model, 2 * m.d_attn, m.bias)
            shapes |= _linear(b + "cross.c_proj", m.d_attn, m.d_model, m.bias)
        if m.mlp:
            if norm:
                shapes |= _norm(b + "ln_2", m.d_model)
            shapes |= _linear(b + "mlp.c_fc", m.d_model, m.d_ff, m.bias)
            shapes |= _linear(b + "mlp.c_proj", m.d_ff, m.d_model, m.bias)
    if m.norm == "pre":
        shapes |= _norm(f"{p}ln_f", m.d_model)
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
    raw = _source(spec, file)  # fresh arrays; float64 ones rounded in place, no copy
    return {name: to_sheet_precision(raw.pop(name), in_place=True) for name in list(raw)}


def to_sheet_precision(value: np.ndarray, in_place: bool = False) -> np.ndarray:
    """The numbers the sheet holds for `value`, as float64: what every engine reads from
    the file, so the reference runs on exactly them.

    float32 and float16 arrays (a checkpoint's precision) give each value's shortest
    decimal that reads back as the same float32 or float16 (at most 9 or 5 significant
    digits; NumPy's `str` of the scalar), as the double nearest to that decimal: the
    sheet holds float64("0.1"), not the float32 0.1 widened. Anything else is rounded
    to 15 significant digits: what spreadsheets show and LibreOffice saves (openpyxl
    itself writes 16), the same numbers as `float(f"{x:.15g}")` without -0.0.

    Both are computed with NumPy in chunks, about 0.1 to 0.2 microseconds a weight
    (per-element formatting takes 1.5); see `_round15` and `_shortest`. `in_place`:
    the caller gives up `value`, which is overwritten when it is a float64 array."""
    source = np.asarray(value)
    if source.dtype in SHORTEST_DIGITS:
        flat = source.ravel()
        out = np.empty(flat.size, dtype=np.float64)
        for start in range(0, flat.size, CHUNK):
            out[start:start + CHUNK] = _shortest(flat[start:start + CHUNK])
        return out.reshape(source.shape)
    flat = np.asarray(value, dtype=np.float64).ravel()
    own = in_place and flat.flags.writeable and np.shares_memory(flat, value)
    out = flat if own else np.empty_like(flat)
    for start in range(0, flat.size, CHUNK):
        out[start:start + CHUNK] = _round15(flat[start:start + CHUNK])
    return out.reshape(np.shape(value))


# The precisions whose values are written as their shortest decimals, and the most
# significant digits such a decimal needs: 1 + ceil(bits * log10(2)), bits counting the
# implicit one (24 for float32, 11 for float16).
SHORTEST_DIGITS = {np.dtype(np.float32): 9, np.dtype(np.float16): 5}


CHUNK = 1 << 20  # elements rounded at once: a few temporaries of 8 MB
_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp's splitter
_POW10 = 10.0 ** np.arange(23)  # the powers of ten a double holds exactly


def _round15(x: np.ndarray) -> np.ndarray:
    """x rounded as `float(f"{x:.15g}") + 0.0`, element by element.

    The decimal is M * 10^E with M = x / 10^E rounded half to even to an integer of
    15 digits. With 10^-E exact (|x| from 1e-8 to 1e15), x * 10^-E is computed exactly
    as hi + lo (Dekker's product), so M is exactly Python's; M * 10^E is then one
    correctly rounded quotient of two exact doubles, as Python's parser gives.
    Anything else (zeros, tiny, huge, non-finite) goes the slow way."""
    mag = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 14 - np.floor(np.log10(mag))  # x * 10^k has 15 digits before the point
    usable = np.isfinite(k) & (k >= 0) & (k <= 22)
    k = np.where(usable, k, 0).astype(np.int64)
    out, shift = _scaled_round(np.where(usable, mag, 1.0), k)  # 1.0: no overflow warnings
    done = usable & (shift == 0)
    retry = np.flatnonzero(usable & (shift != 0))  # log10 missed by one at a power of ten
    k2 = k[retry] + shift[retry]
    fits = (k2 >= 0) & (k2 <= 22)
    value, shift2 = _scaled_round(mag[retry[fits]], k2[fits])
    out[retry[fits]] = value
    done[retry[fits]] = shift2 == 0
    for i in np.flatnonzero(~done):
        out[i] = abs(float(f"{x[i]:.15g}"))
    return np.copysign(out, x) + 0.0  # + 0.0: no -0 in the sheet


def _scaled_round(mag: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """round(mag * 10^k) / 10^k, and where mag * 10^k does not have 15 digits before
    the point the shift of k that would give them (+1, -1; else 0)."""
    scale = _POW10[k]
    hi, lo = _two_product(mag, scale)
    shift = (((hi < 1e14) | ((hi == 1e14) & (lo < 0))).astype(np.int64)
             - ((hi > 1e15) | ((hi == 1e15) & (lo >= 0))))
    r = np.rint(hi)  # half to even
    d = hi - r  # exact, |d| <= 0.5; |lo| is below half an ulp of hi, so it only breaks ties
    r += ((d == 0.5) & (lo > 0)).astype(np.float64) - ((d == -0.5) & (lo < 0))
    return r / scale, shift


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a * b = hi + lo exactly (Dekker), for products far from overflow and underflow."""
    hi = a * b
    a_hi, b_hi = _split(a), _split(b)
    a_lo, b_lo = a - a_hi, b - b_hi
    lo = ((a_hi * b_hi - hi) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return hi, lo


def _split(a: np.ndarray) -> np.ndarray:
    """The high 26 bits of a (Veltkamp)."""
    c = _SPLIT * a
    return c - (c - a)


def _shortest(x: np.ndarray) -> np.ndarray:
    """Each float32 or float16 of `x` as the double nearest to its shortest decimal that
    reads back as itself, element by element: the decimal NumPy prints for the scalar.

    For |x| from 1e-14 (float32; any nonzero float16) to 2^(bits - 2), the decimal with
    n digits nearest to x is D_n = round(x * 10^k) / 10^k, k = n - 1 - exponent, computed
    exactly as in `_round15` and divided once, as a parser does. D_n reads back as x
    when it lies strictly within half a unit of x's last place: then D_n as a double
    does too (rounding is monotonic, and the midpoints are doubles), and casts back to
    x. If D_n does, so does D_{n+1} (it is at least as near): the shortest is found
    from n = most - 2 (where most values end), upwards while D_n fails, downwards while
    it reads back; `most` digits always do. Formatted one by one, as NumPy prints the
    scalar: anything outside the range (zeros aside: tiny, huge, non-finite); a D_n
    whose double lands exactly on a midpoint (below 2^(bits - 2) no midpoint has so few
    digits, so D_n came within half a double's unit of one); a power of two where D_n
    fails (its lower neighbour is nearer, so a decimal on the other side may read
    back); x exactly halfway between two decimals of n digits that read back."""
    dtype = x.dtype
    most = SHORTEST_DIGITS[dtype]
    info = np.finfo(dtype)
    lowest = -14 if dtype == np.float32 else -8  # float16's least is 6e-8
    mag = np.abs(x)
    mag64 = mag.astype(np.float64)
    usable = (mag64 >= 10.0 ** lowest) & (mag64 < 2.0 ** (info.nmant - 1))
    safe = np.where(usable, mag64, 1.0)  # 1.0: no warnings from the rest
    exp = np.clip(np.floor(np.log10(safe)), lowest, info.nmant).astype(np.int64)
    exp += _exponent_fix(safe, exp, most, info.nmant + 1)
    # The exponent field is the same as the next smaller number's: the gap below x is
    # half the gap above (the least normal number is wrongly included: harmless).
    power_of_two = (mag.view(_BITS[dtype]) & (2 ** info.nmant - 1)) == 0
    slow = ~usable & (mag64 != 0)
    out = np.zeros(x.size, dtype=np.float64)

    def attempt(todo: np.ndarray | slice, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Those of `todo` whose D_n reads back, and the others (the unsure ones set
        aside for the slow way); D_n goes to `out` for the first."""
        value, halfway = _nearest_decimal(safe[todo], n - 1 - exp[todo], info.nmant + 1)
        reads, tie = _reads_back(value, mag[todo])
        unsure = tie | (halfway & reads) | (~reads & power_of_two[todo])
        keep, rest = reads & ~unsure, ~reads & ~unsure
        if isinstance(todo, slice):  # everything: masks, not indices
            slow[unsure & usable] = True
            np.copyto(out, value, where=keep & usable)
            return np.flatnonzero(keep & usable), np.flatnonzero(rest & usable)
        slow[todo[unsure]] = True
        out[todo[keep]] = value[keep]
        return todo[keep], todo[rest]

    down, up = attempt(slice(None), most - 2)  # k >= 0: |x| < 10^(most - 2) for both
    up = attempt(up, most - 1)[1]
    # The most digits always read back: x is within half a unit of the last of them,
    # far less than half a unit of x's last place.
    out[up] = _nearest_decimal(safe[up], most - 1 - exp[up], info.nmant + 1)[0]
    for n in range(most - 3, 0, -1):
        down = down[exp[down] <= n - 1]  # else a whole number, as with one more digit
        down = attempt(down, n)[0]
    out[~usable] = 0.0
    for i in np.flatnonzero(slow):
        out[i] = abs(float(np.format_float_scientific(x[i], unique=True)))
    return np.copysign(out, x.astype(np.float64)) + 0.0  # + 0.0: no -0 in the sheet


_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float16): np.uint16}


def _exponent_fix(mag: np.ndarray, exp: np.ndarray, digits: int, bits: int) -> np.ndarray:
    """+1 or -1 where exp misses floor(log10(mag)) by one (log10 at a power of ten, or
    clipped), else 0: whether mag * 10^(digits - 1 - exp) has `digits` digits before
    the point, computed exactly (mag has `bits` significant bits)."""
    hi, lo = _exact_product(mag, digits - 1 - exp, bits)
    low, high = 10.0 ** (digits - 1), 10.0 ** digits
    return (((hi > high) | ((hi == high) & (lo >= 0))).astype(np.int64)
            - ((hi < low) | ((hi == low) & (lo < 0))))


def _nearest_decimal(mag: np.ndarray, k: np.ndarray,
                     bits: int) -> tuple[np.ndarray, np.ndarray]:
    """round(mag * 10^k) / 10^k rounded half to even, as the double nearest to it (for
    k from 0 to 22 and at most 15 digits before the point), and where mag * 10^k lies
    exactly halfway between two whole numbers; mag has `bits` significant bits."""
    hi, lo = _exact_product(mag, k, bits)
    r = np.rint(hi)  # half to even
    d = hi - r  # exact, |d| <= 0.5; |lo| is below half an ulp of hi, so it only breaks ties
    r += ((d == 0.5) & (lo > 0)).astype(np.float64) - ((d == -0.5) & (lo < 0))
    return r / _POW10[k], (np.abs(d) == 0.5) & (lo == 0)


def _exact_product(mag: np.ndarray, k: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """mag * 10^k = hi + lo exactly. 10^k = 2^k * 5^k, so where 5^k has at most
    53 - bits bits the product of the significands fits a double and lo is 0;
    elsewhere Dekker's product gives lo."""
    scale = _POW10[k]
    hi = mag * scale
    lo = np.zeros_like(hi)
    wide = np.flatnonzero(k > _EXACT_POWER[bits])
    if wide.size:
        hi[wide], lo[wide] = _two_product(mag[wide], scale[wide])
    return hi, lo


# The largest k whose 5^k has at most 53 - bits bits, by the bits of the numbers.
_EXACT_POWER = {bits: max(k for k in range(23) if 5 ** k < 2 ** (53 - bits)) for bits in (11, 24)}


def _reads_back(value: np.ndarray, mag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether the doubles `value` round to `mag` (float32 or float16), and whether they
    lie exactly halfway between two neighbours: 2 * value - nearest is the other one."""
    nearest = value.astype(mag.dtype)
    wide = nearest.astype(np.float64)
    other = 2 * value - wide  # exact: value and wide are within a factor of 2
    tie = (value != wide) & (other.astype(mag.dtype).astype(np.float64) == other)
    return nearest == mag, tie


def _source(spec: Spec, file: Path | None) -> Params:
    if file is not None:
        return load_npz(spec, Path(file))
    w = spec.weights
    if w.source == "npz":
        return load_npz(spec, w.file)
    if w.source == "random":
        return random_weights(spec, w.seed, w.std, w.dtype)
    if w.task not in TASKS:
        raise SpecError(f"weights.task must be one of {', '.join(TASKS)}, not {w.task!r}")
    return TASKS[w.task](spec)


def random_weights(spec: Spec, seed: int, std: float, dtype: str = "float64") -> Params:
    """normal(0, std) everywhere, LayerNorm gains around 1; drawn in float64, then
    rounded to `dtype` (the same seed gives the same numbers, at that precision)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in expected_shapes(spec).items():
        noise = rng.normal(0.0, std, size=shape)
        is_gain = ".ln_" in f".{name}" and name.endswith(".weight")
        params[name] = (1.0 + noise if is_gain else noise).astype(dtype, copy=False)
    return params


def load_npz(spec: Spec, path: Path) -> Params:
    """Load and check an .npz holding exactly the arrays of `expected_shapes`."""
    arrays = read_npz(path, "weights file", "weights archive", WeightsError)
    check_params(spec, arrays, str(path))
    return arrays


NPY_MAGIC = b"\x93NUMPY"  # np.save's single array
ZIP_MAGIC = b"PK"  # np.savez's archive
NUMBERS = "biuf"  # dtype kinds read as numbers: bool, integers, floats


def read_npz(path: Path, what: str, kind: str, error: type[ValueError]) -> Params:
    """Every array of an .npz (a zip of .npy arrays, as np.savez writes), by name, as
    `source_array` keeps it. Nothing is ever unpickled: anything else, a damaged archive or an array
    of Python objects is `error`, saying what is wrong without pointing at unsafe
    loading. `what` names the file ("weights file"), `kind` what it should be."""
    path = Path(path)

    def invalid(reason: str) -> ValueError:
        return error(f"{what} {path} is not a valid {kind} (.npz): {reason}")

    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    with fh:
        head = fh.read(len(NPY_MAGIC))
        if head == NPY_MAGIC:
            raise invalid("it is a single array (.npy); np.savez writes named arrays")
        if not head.startswith(ZIP_MAGIC):
            raise invalid("it is not a zip archive of arrays")
        fh.seek(0)
        try:
            return _read_zip(fh, invalid)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError,
                RuntimeError):  # offsets past the end, bad data, unknown method, encryption
            raise invalid("the zip archive is damaged, cut short or encrypted") from None


def _read_zip(fh, invalid) -> Params:
    """Not np.load, which unpickles a file that is no zip: only .npy members are read."""
    arrays = {}
    with zipfile.ZipFile(fh) as archive:
        for member in archive.infolist():
            name = member.filename.removesuffix(".npy")
            if name == member.filename:
                raise invalid(f"{name!r} is not a NumPy array (.npy)")
            with archive.open(member) as data:
                arrays[name] = _number_array(data, name, invalid)
    return arrays


def _number_array(fh, name: str, invalid) -> np.ndarray:
    """One .npy member of an archive, as `source_array` keeps it; an array of objects is
    never unpickled."""
    try:
        value = np.lib.format.read_array(fh, allow_pickle=False)
    except Exception as e:  # the refusal to unpickle; anything from parsing broken bytes
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            raise invalid(f"array '{name}' holds Python objects, not numbers") from None
        raise invalid(f"array '{name}' is damaged") from None
    if value.dtype.kind not in NUMBERS:
        raise invalid(f"array '{name}' holds {value.dtype} values, not numbers")
    return source_array(value)


def source_array(value: np.ndarray) -> np.ndarray:
    """A weight array as read from a file: float32 and float16 as they are, in the
    machine's byte order (their precision decides the decimals the sheet holds, see
    `to_sheet_precision`), any other numbers as float64."""
    native = value.dtype.newbyteorder("=")
    if native in SHORTEST_DIGITS:
        return np.asarray(value, dtype=native)
    return np.asarray(value, dtype=np.float64)


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
#
# All three share one construction; templates/reverse.toml explains its scale.
# A character is embedded as its code (ord) in dimension 0, a position as the +-1 bits
# of its binary code in the last dimensions. The one head routes each position i to
# a position pi(i): keys are the position's bits times s, queries are its bits mapped
# by a fixed matrix M times s, with b(i) @ M = b(pi(i)) for every i. A query then meets
# its target's key with score bits * s^2 and any other key with at most (bits - 2) * s^2.
# The value carries the code, and the head rounds the code back to a token.

def reverse_weights(spec: Spec) -> Params:
    """Attention to the mirror position: its code is the complement, so M = -I.

    The value carries the character code, and the head turns the attended code c back
    into a token with logits s*(2*a_v*c - a_v^2) = s*(c^2 - (c - a_v)^2): the argmax
    is the token whose code a_v is nearest to c.
    """
    _require_shape(spec, "reverse", mlp=False, value_dims=1)
    m = spec.model
    mirror = [m.max_seq - 1 - i for i in range(m.max_seq)]
    params = _routed(spec, "reverse", -np.eye(m.binary_bits), mirror, value_dims=1,
                     bad_codes="whose mirror positions have complementary bits")
    _rounding_head(spec, params)
    return params


def transpose_weights(spec: Spec) -> Params:
    """An n x n matrix, one token per entry, row-major, comes out transposed.

    Position p = n*r + c has the code (r << k) | c: k bits of row, then k bits of
    column. Its transpose position n*c + r has the same bits with the halves swapped,
    so M swaps the halves: a permutation of the code's bits routes each output
    position to its input position, a permutation of positions.
    """
    _require_shape(spec, "transpose", mlp=False, value_dims=1)
    m = spec.model
    n = math.isqrt(m.max_seq)
    k = max((n - 1).bit_length(), 1)
    if n * n != m.max_seq:
        raise SpecError("weights.task 'transpose' needs model.max_seq = n * n (an n x n matrix)")
    bad_codes = f"that are (row << {k}) | column of each position"
    if m.binary_bits != 2 * k:
        raise SpecError(f"weights.task 'transpose' needs model.binary_codes {bad_codes}")
    swap = np.roll(np.eye(2 * k), k, axis=1)  # bits [row | col] -> [col | row]
    target = [n * (p % n) + p // n for p in range(m.max_seq)]
    params = _routed(spec, "transpose", swap, target, value_dims=1, bad_codes=bad_codes)
    _rounding_head(spec, params)
    return params


def atbash_weights(spec: Spec) -> Params:
    """Attention on the diagonal, a feed-forward lookup of each letter's mirror letter.

    Tokens embed as (c, c^2). ReLU unit 0 keeps c (codes are positive); the unit of
    letter a is relu(1 - (c - a)^2) = relu(2a*c - c^2 + 1 - a^2), which is 1 at c = a
    and 0 at every other integer code, and adds atbash(a) - a to the code. Characters
    that are not ASCII letters fire no letter unit and pass unchanged.
    """
    _require_shape(spec, "atbash", mlp=True, value_dims=2)
    m = spec.model
    letters = [t for t in spec.vocab.tokens if t.isascii() and t.isalpha()]
    missing = sorted({atbash(t) for t in letters} - set(spec.vocab.tokens))
    if missing:
        raise SpecError(f"weights.task 'atbash' needs the mirror letters {missing} in the vocab")
    if m.d_ff != 1 + len(letters) or m.activation != "relu" or not m.bias:
        raise SpecError(f"weights.task 'atbash' needs model.activation = 'relu', "
                        f"model.bias = true and model.d_ff = 1 + letters = {1 + len(letters)}")
    diagonal = list(range(m.max_seq))
    params = _routed(spec, "atbash", np.eye(m.binary_bits), diagonal, value_dims=2,
                     bad_codes="that are all different")
    params["wte"][:, 1] = _codes(spec) ** 2
    fc, fc_b = params["h.0.mlp.c_fc.weight"], params["h.0.mlp.c_fc.bias"]
    proj = params["h.0.mlp.c_proj.weight"]
    fc[0, 0] = proj[0, 0] = 1.0  # keep: relu(c) = c
    for u, t in enumerate(letters, start=1):
        a = float(ord(t))
        fc[0, u], fc[1, u], fc_b[u] = 2 * a, -1.0, 1 - a * a
        proj[u, 0] = ord(atbash(t)) - a
    _rounding_head(spec, params)
    return params


def atbash(char: str) -> str:
    """a <-> z, b <-> y, ..., A <-> Z, ...; anything else is itself."""
    for first, last in ("az", "AZ"):
        if first <= char <= last:
            return chr(ord(first) + ord(last) - ord(char))
    return char


def _codes(spec: Spec) -> np.ndarray:  # -> [V]
    return np.array([ord(t) for t in spec.vocab.tokens], dtype=np.float64)


def _routed(spec: Spec, task: str, query_map: np.ndarray, target: list[int],
            value_dims: int, bad_codes: str) -> Params:
    """Zero weights but for: token codes in wte, one head from position i to target[i]
    that copies the first `value_dims` dimensions, c_proj the identity."""
    from .reference import binary_code  # reference imports this module

    m = spec.model
    d, bits, s = m.d_model, m.binary_bits, spec.weights.sharpness
    codes = binary_code(m.binary_codes, bits, bits)  # [T, bits] of +-1
    routed = np.array_equal(codes @ query_map, codes[target])
    if not routed or len(set(m.binary_codes)) != m.max_seq:
        raise SpecError(f"weights.task '{task}' needs model.binary_codes {bad_codes}")
    params = {name: np.zeros(shape) for name, shape in expected_shapes(spec).items()}
    params["wte"][:, 0] = _codes(spec)
    c_attn = params["h.0.attn.c_attn.weight"]  # columns: [q | k | v], d each
    pos = slice(d - bits, d)
    c_attn[pos, pos] = s * query_map  # query: the target's code
    c_attn[pos, d + (d - bits):2 * d] = s * np.eye(bits)  # key: the own code
    for i in range(value_dims):
        c_attn[i, 2 * d + i] = 1.0  # value: the token's code (and its square)
    params["h.0.attn.c_proj.weight"] = np.eye(d)
    return params


def _rounding_head(spec: Spec, params: Params) -> None:
    """Logits s*(2*a*c - a^2) for the code c in dimension 0: nearest code a wins."""
    s, codes = spec.weights.sharpness, _codes(spec)
    params["lm_head.weight"][0, :] = 2 * s * codes
    params["lm_head.bias"][:] = -s * codes**2


def _require_shape(spec: Spec, task: str, mlp: bool, value_dims: int) -> None:
    m, h = spec.model, spec.head
    wanted = {
        "model.n_layer = 1": m.n_layer == 1,
        "model.n_head = 1": m.n_head == 1,
        "model.head_size = model.d_model": m.head_size == m.d_model,
        "model.positions = 'binary'": m.positions == "binary",
        "model.norm = 'none'": m.norm == "none",
        f"model.mlp = {str(mlp).lower()}": m.mlp == mlp,
        "model.residual = false": not m.residual,
        "model.causal = false": not m.causal,
        "head.tied = false and head.bias = true": not h.tied and h.bias,
        f"model.d_model >= the code's bits + {value_dims}":
            m.positions != "binary" or m.d_model >= m.binary_bits + value_dims,
    }
    missing = [k for k, ok in wanted.items() if not ok]
    if missing:
        raise SpecError(f"weights.task '{task}' needs {', '.join(missing)}")


def _require(spec: Spec, task: str, wanted: dict[str, bool]) -> None:
    missing = [k for k, ok in wanted.items() if not ok]
    if missing:
        raise SpecError(f"weights.task '{task}' needs {', '.join(missing)}")


def _code_shape(spec: Spec, d_model: int) -> dict[str, bool]:
    """What the code-and-position tasks below share."""
    m, h = spec.model, spec.head
    return {
        "model.n_head = 1": m.n_head == 1,
        "model.head_size = model.d_model": m.head_size == m.d_model,
        "model.positions = 'binary'": m.positions == "binary",
        f"model.d_model = {d_model}": m.d_model == d_model,
        "model.norm = 'none'": m.norm == "none",
        "model.mlp = false": not m.mlp,
        "model.bias = false": not m.bias,
        "head.tied = false and head.bias = true": not h.tied and h.bias,
        "model.binary_codes all different": len(set(m.binary_codes)) == len(m.binary_codes),
    }


def _code_head(params: Params, dim: int, codes: np.ndarray, s: float) -> None:
    """Logits s*(2*a_v*c - a_v^2) of the value c in dimension `dim`: the argmax is the
    token whose code a_v is nearest to c (see reverse_weights)."""
    params["lm_head.weight"][dim, :] = 2 * s * codes
    params["lm_head.bias"][:] = -s * codes**2


NEVER = -1000.0  # a logit code no attended character code comes near: never chosen


def successor_weights(spec: Spec) -> Params:
    """A decoder whose one head attends to its own position and outputs the next letter.

    Embedding and positions as in `reverse`, but the query is plus the position code, so
    the best key under the causal mask is the position itself (the diagonal). The value
    carries the character code c, and the head picks the token whose *predecessor's*
    code is nearest to c: after 'a' comes 'b', after 'z' the end token '.', after a
    space 'a'. Fed back, the sheet continues the alphabet.
    """
    m = spec.model
    bits = m.binary_bits if m.positions == "binary" else 0
    _require(spec, "successor", _code_shape(spec, 1 + bits) | {
        "model.n_layer = 1": m.n_layer == 1, "model.residual = false": not m.residual,
        "model.causal = true": m.causal,
        "the tokens ' ', 'a'..'z'": set(" abcdefghijklmnopqrstuvwxyz") <= set(spec.vocab.tokens),
    })
    d, s, tokens = m.d_model, spec.weights.sharpness, spec.vocab.tokens
    params = {name: np.zeros(shape) for name, shape in expected_shapes(spec).items()}
    params["wte"][:, 0] = [ord(t) for t in tokens]
    c_attn = params["h.0.attn.c_attn.weight"]
    for b in range(1, d):
        c_attn[b, b] = c_attn[b, d + b] = s  # query and key: the position code
    c_attn[0, 2 * d] = 1.0
    params["h.0.attn.c_proj.weight"] = np.eye(d)
    nxt = {chr(c): chr(c + 1) for c in range(ord("a"), ord("z"))} | {" ": "a"}
    if spec.generate and spec.generate.end:
        nxt["z"] = spec.generate.end
    after = {v: float(ord(k)) for k, v in nxt.items()}
    _code_head(params, 0, np.array([after.get(t, NEVER) for t in tokens]), s)
    return params


def copy_weights(spec: Spec) -> Params:
    """An encoder-decoder that copies its source through cross-attention.

    Dimension 0 carries a character's code, dimension 1 the code that cross-attention
    brings, the rest the binary position code. Every self-attention is zero (the
    residual passes the stream on), so the encoder's output is its embedding. In each
    decoder block, cross-attention's query and key are the position code: decoder
    position i attends to source position i (the diagonal of the cross weights), and
    the value brings that source character's code into dimension 1. The head turns it
    into the target token with that code; a source position past the text holds the
    padding, whose code the end token takes, so the copy ends with the end token.
    """
    m, g = spec.model, spec.generate
    bits = m.binary_bits if m.positions == "binary" else 0
    _require(spec, "copy", _code_shape(spec, 2 + bits) | {
        "an encoder-decoder": m.encoder_decoder, "model.residual = true": m.residual,
        "generate.end": bool(g and g.end),
        "every source token in the target vocabulary":
            set(spec.vocab.tokens) - {spec.vocab.pad} <= set(spec.out_vocab.tokens),
    })
    d, s = m.d_model, spec.weights.sharpness
    params = {name: np.zeros(shape) for name, shape in expected_shapes(spec).items()}
    params["enc.wte"][:, 0] = [ord(t) for t in spec.vocab.tokens]
    params["dec.wte"][:, 0] = [ord(t) for t in spec.out_vocab.tokens]
    for i in range(m.n_layer):
        p = f"dec.h.{i}.cross."
        for b in range(2, d):
            params[p + "c_q.weight"][b, b] = params[p + "c_kv.weight"][b, b] = s
        params[p + "c_kv.weight"][0, d] = 1.0  # value: the source character's code
        params[p + "c_proj.weight"][0, 1] = 1.0 / m.n_layer  # the layers' sum is the code
    codes = {t: float(ord(t)) for t in spec.vocab.tokens if t != spec.vocab.pad}
    codes[g.end] = float(ord(spec.vocab.pad))
    _code_head(params, 1, np.array([codes.get(t, NEVER) for t in spec.out_vocab.tokens]), s)
    return params


TASKS = {"reverse": reverse_weights, "atbash": atbash_weights, "transpose": transpose_weights,
         "successor": successor_weights, "copy": copy_weights}
