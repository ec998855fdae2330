"""Weights: documented names and shapes, clear errors, the hand-built reversal."""

import io
import pickle
import re
import zipfile

import numpy as np
import pytest
from helpers import ANSWERS, ATBASH, shortest_decimals
from hypothesis import given, settings
from hypothesis import strategies as st

from xlformer import catalog, reference
from xlformer.spec import SpecError, load_spec, parse_spec
from xlformer.weights import (
    WeightsError,
    expected_shapes,
    load_npz,
    make_weights,
    to_sheet_precision,
)


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


def test_the_position_table_may_be_longer_than_the_sequence():
    """GPT-2 knows 1,024 positions; a workbook of 8 reads wpe's first 8 rows."""
    spec = load_spec(catalog.resolve("tiny-gpt"))
    longer = parse_spec(spec.source.replace("max_seq = 8", "max_seq = 8\nn_positions = 20"))
    assert expected_shapes(longer)["wpe"] == (20, 8)
    params = make_weights(longer)
    assert params["wpe"].shape == (20, 8)
    trace = reference.forward(longer, params, "abc")
    np.testing.assert_array_equal(trace["pos_emb"], params["wpe"][:8])
    short = dict(params, wpe=params["wpe"][:8])  # the rows past max_seq change nothing
    np.testing.assert_array_equal(reference.forward(spec, short, "abc")["logits"],
                                  trace["logits"])


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


def test_missing_npz(gpt, tmp_path):
    with pytest.raises(WeightsError, match="weights file .*none.npz does not exist"):
        load_npz(gpt, tmp_path / "none.npz")


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _zip_bytes(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


GOOD = _npz_bytes(wte=np.ones((27, 8)), wpe=np.ones((8, 8)))
# What a user may hand over as weights, and what the error says about it.
BAD_FILES = {
    "single .npy": (_npy_bytes(np.ones((27, 8))), "it is a single array (.npy); np.savez "
                    "writes named arrays"),
    "random bytes": (np.random.default_rng(0).bytes(300), "it is not a zip archive of arrays"),
    "text": (b"wte = [[1, 2], [3, 4]]\n", "it is not a zip archive of arrays"),
    "empty": (b"", "it is not a zip archive of arrays"),
    "cut short": (GOOD[:len(GOOD) // 2], "the zip archive is damaged, cut short or encrypted"),
    "cut inside an array": (GOOD[:300] + GOOD[-200:], "the zip archive is damaged"),
    "object array": (_npz_bytes(wte=np.array([1.0, None, "x"], dtype=object)),
                     "array 'wte' holds Python objects, not numbers"),
    "text array": (_npz_bytes(wte=np.array(["a", "b"])), "array 'wte' holds <U1 values, "
                   "not numbers"),
    "complex array": (_npz_bytes(wte=np.ones(2) * 1j), "array 'wte' holds complex128 values"),
    "a zip of other files": (_zip_bytes(**{"notes.txt": b"hi"}),
                             "'notes.txt' is not a NumPy array (.npy)"),
    "a broken array header": (_zip_bytes(**{"wte.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr':"}),
                              "array 'wte' is damaged"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_file_that_is_no_weights_archive_says_so_and_never_unpickles(gpt, tmp_path, case,
                                                                        monkeypatch):
    data, reason = BAD_FILES[case]
    path = tmp_path / "w.npz"
    path.write_bytes(data)
    monkeypatch.setattr(pickle, "loads", _never)
    monkeypatch.setattr(pickle, "load", _never)
    with pytest.raises(WeightsError) as err:
        load_npz(gpt, path)
    message = str(err.value)
    assert message.startswith(f"weights file {path} is not a valid weights archive (.npz): ")
    assert reason in message
    assert "pickle" not in message and "\n" not in message


def _never(*_args, **_kwargs):
    raise AssertionError("a weights file was unpickled")


@pytest.mark.parametrize("word", ["python", "Hello!", "  a  b", "~~~ !!", "{|}()*"])
def test_reference_reverses_with_the_hand_built_weights(word):
    spec = load_spec(catalog.resolve("reverse"))
    trace = reference.forward(spec, make_weights(spec), word)
    assert reference.decode(spec.vocab, trace["output.ids"]) == word[::-1]
    assert np.allclose(trace["h.0.attn.head0.weights"], np.eye(6)[::-1], atol=1e-9)


PRINTABLE = "".join(chr(c) for c in range(32, 127))


@pytest.mark.slow
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


def transposed(text: str) -> str:
    return ANSWERS["transpose"](text.ljust(9))


def run(name: str, text: str):
    spec = load_spec(catalog.resolve(name))
    trace = reference.forward(spec, make_weights(spec), text)
    return spec, trace, reference.decode(spec.vocab, trace["output.ids"])


@pytest.mark.parametrize("word", ["wizard", "Hello, W", "AbyZ 09!", "zzzzzzzz", "", "~@[`{"])
def test_reference_ciphers_atbash_with_attention_on_the_diagonal(word):
    _, trace, out = run("atbash", word)
    assert out == word.ljust(8).translate(ATBASH)
    assert np.allclose(trace["h.0.attn.head0.weights"], np.eye(8), rtol=0, atol=1e-20)


@pytest.mark.parametrize("word", ["123456789", "abcdefghi", "A.b,C;d:E", "1234", ""])
def test_reference_transposes_a_3x3_matrix(word):
    _, trace, out = run("transpose", word)
    assert out == transposed(word)
    route = np.arange(9).reshape(3, 3).T.ravel()  # output position -> input position
    assert np.allclose(trace["h.0.attn.head0.weights"], np.eye(9)[route], atol=1e-9)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=PRINTABLE, max_size=8))
def test_every_printable_input_ciphers_exactly(word):
    """sharpness = 8 in templates/atbash.toml: every letter unit is exactly 0 or 1."""
    _, trace, out = run("atbash", word)
    assert out == word.ljust(8).translate(ATBASH)
    units = trace["h.0.mlp.act"][:, 1:]
    assert set(np.unique(units)) <= {0.0, 1.0}
    assert np.array_equal(trace["h.0.mlp.c_proj"][:, 0],
                          [float(ord(c)) for c in out])


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=PRINTABLE, max_size=9))
def test_every_printable_matrix_transposes_exactly(word):
    _, trace, out = run("transpose", word)
    assert out == transposed(word)
    codes = np.array([ord(c) for c in out])
    assert np.max(np.abs(trace["h.0.attn.c_proj"][:, 0] - codes)) < 1e-6


@pytest.mark.parametrize("name", ["reverse", "atbash", "transpose"])
def test_worst_case_inputs_keep_the_winner_ahead_by_the_sharpness(name):
    """Attention reads positions only, so the attended code is off the most when every
    other position holds an extreme code: these inputs bound the margin of all inputs."""
    spec = load_spec(catalog.resolve(name))
    params, T = make_weights(spec), spec.model.max_seq
    answer = ANSWERS[name]
    for fill in " ~":
        for p in range(T):
            for x in PRINTABLE:
                text = fill * p + x + fill * (T - p - 1)
                trace = reference.forward(spec, params, text)
                assert reference.decode(spec.vocab, trace["output.ids"]) == answer(text)
                top2 = np.sort(trace["logits"], axis=-1)[:, -2:]
                lead = np.min(top2[:, 1] - top2[:, 0])
                assert lead > 0.999 * spec.weights.sharpness, text


CODES_3X3 = "[0, 1, 2, 4, 5, 6, 8, 9, 10]"


@pytest.mark.parametrize(("name", "changes", "message"), [
    ("transpose", {CODES_3X3: "[0, 1, 2, 3, 4, 5, 6, 7]", "max_seq = 9": "max_seq = 8"},
     "model.max_seq = n * n"),
    ("transpose", {CODES_3X3: "[0, 1, 2, 3, 4, 5, 6, 7, 8]"},
     "binary_codes that are (row << 2) | column"),
    ("transpose", {CODES_3X3: "[0, 1, 2, 4, 5, 6, 8, 9, 3]"},
     "binary_codes that are (row << 2) | column"),
    ("atbash", {"d_ff = 53": "d_ff = 27"}, "model.d_ff = 1 + letters = 53"),
    ("atbash", {'set = "printable"': 'tokens = [" ", "a", "b"]'},
     "mirror letters ['y', 'z'] in the vocab"),
    ("atbash", {"[0, 1, 2, 3, 4, 5, 6, 7]": "[0, 1, 2, 3, 4, 5, 6, 6]"},
     "binary_codes that are all different"),
    ("reverse", {"residual = false": "residual = true"}, "needs model.residual = false"),
    ("reverse", {"[0, 1, 3, 4, 6, 7]": "[0, 1, 3, 4, 5, 7]"}, "complementary bits"),
])
def test_task_weights_say_what_the_spec_lacks(name, changes, message):
    source = catalog.resolve(name).read_text()
    for old, new in {**changes, f'text = "{load_spec(catalog.resolve(name)).text}"':
                     'text = ""'}.items():
        assert old in source
        source = source.replace(old, new)
    with pytest.raises(SpecError, match="weights.task") as err:
        make_weights(parse_spec(source))
    assert message in str(err.value)


def rounded_one_by_one(value: np.ndarray) -> np.ndarray:
    """15 significant digits as Python formats them: the definition to_sheet_precision
    must match bit for bit."""
    flat = [float(f"{x:.15g}") + 0.0 for x in np.asarray(value, dtype=np.float64).ravel()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(value))


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    same = (got.view(np.int64) == want.view(np.int64)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), list(zip(got[~same][:5], want[~same][:5], strict=True))


def test_rounding_to_sheet_precision_is_pythons_bit_for_bit():
    rng = np.random.default_rng(7)
    n = 50_000
    powers = 10.0 ** np.arange(-30, 31)
    arrays = [
        rng.normal(0, 0.02, n),  # weights as they come
        rng.normal(0, 1, n) * 10.0 ** rng.integers(-320, 308, n),  # every magnitude
        rng.standard_cauchy(n),
        rng.integers(-10**17, 10**17, n).astype(np.float64),  # integers past 15 digits
        rng.integers(-1000, 1000, n).astype(np.float64),
        (rng.integers(1, 10**15, n) + 0.5) * 10.0 ** rng.integers(-30, 10, n),  # ties
        np.concatenate([powers, np.nextafter(powers, 0), np.nextafter(powers, np.inf)]),
        rng.random(n) * 5e-308,  # subnormal and tiny normal
        np.array([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                  -1.7976931348623157e308, 999999999999999.5, 99999999999999.95,
                  123456789012345.5, -0.1, np.inf, -np.inf, np.nan]),
    ]
    for value in arrays:
        got = to_sheet_precision(value.reshape(-1, 2) if value.size % 2 == 0 else value)
        assert_same_bits(got.ravel(), rounded_one_by_one(value))
        assert not np.any(np.signbit(got) & (got == 0))  # no -0.0


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.floats(allow_nan=False), min_size=1, max_size=50))
def test_rounding_to_sheet_precision_matches_on_any_floats(values):
    value = np.array(values)
    assert_same_bits(to_sheet_precision(value), rounded_one_by_one(value))


# --- weights at the precision of their source -------------------------------------------

def float32_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    n = 50_000
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    powers = np.float32(2.0) ** np.arange(-149, 128, dtype=np.float32)
    return [
        rng.normal(0, 0.02, n).astype(np.float32),  # weights as they come
        bits[np.isfinite(bits)],  # every magnitude, subnormals too
        ((rng.integers(127 - 47, 127 + 23, n) << 23) | rng.integers(0, 2**23, n)).astype(
            np.uint32).view(np.float32),  # 1e-14 .. 8e6, where NumPy does the work
        np.concatenate([powers, np.nextafter(powers, np.float32(0)), -powers]),
        np.float32([0.1, -0.0, 0.0, 1.0, 84000.125, 4194303.75, 4194304.5, 9.999999e-15,
                    1e-14, 16777216.0, 3.4028235e38, 1e-45]),
    ]


def test_float32_and_float16_weights_are_their_shortest_decimals():
    """np.float32(0.1) is in the sheet as 0.1, the double nearest to "0.1", and every
    other float32 (and every float16) as its shortest decimal, as NumPy prints it."""
    every_float16 = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    for value in [*float32_cases(), every_float16[np.isfinite(every_float16)]]:
        got = to_sheet_precision(value.reshape(-1, 2) if value.size % 2 == 0 else value)
        assert got.dtype == np.float64
        assert_same_bits(got.ravel(), shortest_decimals(value))
        assert np.array_equal(got.ravel().astype(value.dtype), value)  # reads back
    assert to_sheet_precision(np.float32([0.1]))[0] == 0.1 != float(np.float32(0.1))


def test_an_npz_of_float32_or_float16_keeps_its_precision(gpt, tmp_path):
    rng = np.random.default_rng(3)
    source = {name: rng.normal(0, 0.5, shape).astype(np.float32 if i % 2 else ">f2")
              for i, (name, shape) in enumerate(expected_shapes(gpt).items())}
    np.savez(tmp_path / "w.npz", **source)
    loaded = load_npz(gpt, tmp_path / "w.npz")
    assert {v.dtype for v in loaded.values()} == {np.dtype(np.float32), np.dtype(np.float16)}
    params = make_weights(gpt, tmp_path / "w.npz")
    for name, value in source.items():
        assert_same_bits(params[name], shortest_decimals(value))


def test_random_weights_in_float32_are_the_float64_ones_rounded(gpt):
    spec = parse_spec(gpt.source.replace("[weights]", '[weights]\ndtype = "float32"'))
    assert spec.weights.dtype == "float32"
    wide, narrow = make_weights(gpt), make_weights(spec)
    for name in wide:
        assert_same_bits(narrow[name], shortest_decimals(wide[name].astype(np.float32)))


@pytest.mark.parametrize(("table", "message"), [
    ('source = "random"\ndtype = "bfloat16"',
     "weights.dtype must be one of float64, float32, float16, not 'bfloat16'"),
    ('source = "npz"\nfile = "w.npz"\ndtype = "float32"',
     "weights.dtype is for source = 'random'"),
])
def test_a_wrong_weights_dtype_is_named(gpt, table, message):
    source = gpt.source.split("[weights]")[0] + "[weights]\n" + table + "\n"
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(source)
