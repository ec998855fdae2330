"""GPT-2-style checkpoints: import, then the reference, a hand-written GPT-2 forward pass
and both engines agree.

The checkpoints are small random models written here in GPT-2's names, in both matrix
layouts, as .npz and .safetensors. `gpt2_forward` reads the checkpoint's own tensors
(packed Q/K/V, Conv1D or nn.Linear layout) without going through xlformer, so it checks
the import's split and transposes, not just its consistency with itself.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import failures, lazy_recalc, shortest_decimals, significant_digits
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from safetensors.numpy import save_file

from xlformer import builder, checkpoint, recalc, reference, writer
from xlformer.cli import main
from xlformer.reader import open_values, read_built
from xlformer.spec import load_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

TOKENS = list(" abcdefghijk")
V, D, N_CTX, D_FF, N_HEAD, N_LAYER = len(TOKENS), 8, 8, 12, 2, 2

# (case, layout, file type, "transformer." prefix, biases, tied head, precision)
CASES = [
    ("conv1d-npz", "conv1d", ".npz", True, True, True, np.float64),
    ("linear-safetensors", "linear", ".safetensors", True, False, False, np.float32),
    ("conv1d-safetensors-hf", "conv1d", ".safetensors", False, True, True, np.float32),
    ("linear-npz-untied", "linear", ".npz", True, True, False, np.float64),
    ("conv1d-safetensors-f16", "conv1d", ".safetensors", True, True, True, np.float16),
]
IDS = [c[0] for c in CASES]


def gpt2_checkpoint(layout: str, prefix: bool, bias: bool, tied: bool, seed: int = 0):
    """A random GPT-2 state dict; nanoGPT's bias=False drops LayerNorm biases too."""
    rng = np.random.default_rng(seed)
    t = {"wte.weight": rng.normal(0, 0.5, (V, D)), "wpe.weight": rng.normal(0, 0.5, (N_CTX, D))}

    def matrix(name, n_in, n_out):
        w = rng.normal(0, n_in ** -0.5, (n_in, n_out))
        t[name + ".weight"] = w if layout == "conv1d" else w.T.copy()
        if bias:
            t[name + ".bias"] = rng.normal(0, 0.1, n_out)

    def norm(name):
        t[name + ".weight"] = 1 + rng.normal(0, 0.1, D)
        if bias:
            t[name + ".bias"] = rng.normal(0, 0.1, D)

    for i in range(N_LAYER):
        norm(f"h.{i}.ln_1")
        matrix(f"h.{i}.attn.c_attn", D, 3 * D)
        matrix(f"h.{i}.attn.c_proj", D, D)
        norm(f"h.{i}.ln_2")
        matrix(f"h.{i}.mlp.c_fc", D, D_FF)
        matrix(f"h.{i}.mlp.c_proj", D_FF, D)
        if not prefix:  # Hugging Face keeps the causal mask as a buffer
            t[f"h.{i}.attn.bias"] = np.tril(np.ones((N_CTX, N_CTX)))[None, None]
    norm("ln_f")
    named = {(f"transformer.{k}" if prefix else k): v for k, v in t.items()}
    named["lm_head.weight"] = t["wte.weight"] if tied else rng.normal(0, 0.5, (V, D))
    return named


def gpt2_forward(ck: dict, ids, layout: str):  # [T] -> logits [T, V]
    """GPT-2 from the checkpoint's own tensors, picoGPT style."""
    g = {k.removeprefix("transformer."): v for k, v in ck.items()}

    def lin(x, name):
        w = g[name + ".weight"] if layout == "conv1d" else g[name + ".weight"].T
        return x @ w + g.get(name + ".bias", 0)

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g[name + ".weight"] + g.get(name + ".bias", 0)

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    T, hs = len(ids), D // N_HEAD
    x = g["wte.weight"][ids] + g["wpe.weight"][:T]
    for i in range(N_LAYER):
        q, k, v = np.split(lin(ln(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn"), 3, axis=-1)
        q, k, v = (a.reshape(T, N_HEAD, hs).transpose(1, 0, 2) for a in (q, k, v))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hs) + (1 - np.tri(T)) * -1e10
        w = np.exp(scores - scores.max(-1, keepdims=True))
        out = (w / w.sum(-1, keepdims=True)) @ v
        x = x + lin(out.transpose(1, 0, 2).reshape(T, D), f"h.{i}.attn.c_proj")
        x = x + lin(gelu(lin(ln(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc")), f"h.{i}.mlp.c_proj")
    return ln(x, "ln_f") @ ck["lm_head.weight"].T


def write(tensors: dict, path: Path, dtype=np.float32) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **tensors)
    else:  # as checkpoints come: float32 (or float16)
        save_file({k: v.astype(dtype) for k, v in tensors.items()}, str(path))
    return path


def import_case(case, folder: Path, max_seq: int = 6, layout_option: bool = False):
    _, layout, suffix, prefix, bias, tied, dtype = next(c for c in CASES if c[0] == case)
    ck = gpt2_checkpoint(layout, prefix, bias, tied)
    path = write(ck, folder / f"{case}{suffix}", dtype)
    vocab = folder / "vocab.json"
    vocab.write_text(json.dumps(TOKENS))
    args = ["import", str(path), "--heads", str(N_HEAD), "--vocab", str(vocab),
            "--max-seq", str(max_seq), "--text", "badge", "-o", str(folder / f"{case}.toml")]
    if layout_option:
        args += ["--layout", layout]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    if dtype != np.float64:  # the sheet holds each float32 as its shortest decimal
        ck = {k: shortest_decimals(v.astype(dtype)) for k, v in ck.items()}
    return ck, layout, load_spec(folder / f"{case}.toml")


@pytest.mark.parametrize("case", IDS)
def test_reference_of_the_import_is_the_gpt2_forward_pass(case, tmp_path):
    ck, layout, spec = import_case(case, tmp_path, max_seq=N_CTX, layout_option=case == IDS[0])
    params = make_weights(spec)
    for text in ("badge", "a", "kjihgfed"):
        want = gpt2_forward(ck, reference.encode(spec.vocab, text, N_CTX), layout)
        np.testing.assert_allclose(reference.forward(spec, params, text)["logits"], want,
                                   rtol=1e-9, atol=1e-9)


def test_imported_spec_is_gpt2s_architecture(tmp_path):
    _, _, spec = import_case("linear-safetensors", tmp_path)
    m = spec.model
    assert (m.n_layer, m.n_head, m.d_model, m.d_ff, m.max_seq) == (N_LAYER, N_HEAD, D, D_FF, 6)
    assert (m.activation, m.norm, m.positions, m.causal, m.ln_eps) == (
        "gelu", "pre", "learned", True, 1e-5)
    assert (m.bias, spec.head.tied, spec.vocab.tokens) == (False, False, tuple(TOKENS))
    # the whole position table is kept; the workbook reads its first max_seq rows
    assert m.n_positions == N_CTX
    assert make_weights(spec)["wpe"].shape == (N_CTX, D)


# --- precision: a float32 (float16) checkpoint's weights are its shortest decimals ----

PRECISE = {"linear-safetensors": (np.float32, 9), "conv1d-safetensors-f16": (np.float16, 5)}


def cell_texts(path: Path, area) -> np.ndarray:
    """The texts of an area's cells as the file's XML holds them."""
    sheets = load_workbook(path, read_only=True).sheetnames
    with zipfile.ZipFile(path) as z:
        xml = z.read(f"xl/worksheets/sheet{sheets.index(area.sheet) + 1}.xml")
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    texts = {c.get("r"): c.findtext("m:v", namespaces=ns)
             for c in ElementTree.fromstring(xml).iterfind(".//m:c", ns)}
    return np.array([[texts[f"{get_column_letter(area.col + j)}{area.row + i}"]
                      for j in range(area.ncols)] for i in range(area.nrows)])


def imported_arrays(spec_path: Path) -> dict[str, np.ndarray]:
    with np.load(spec_path.with_suffix(".npz"), allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


@pytest.mark.parametrize("case", PRECISE)
def test_a_float32_checkpoint_is_written_as_its_shortest_decimals(case, tmp_path):
    """The import keeps float32 (float16) tensors so; each weight cell of the workbook
    holds the shortest decimal that reads back as the checkpoint's number (at most 9,
    or 5, significant digits), and the reference runs on exactly those numbers."""
    dtype, most = PRECISE[case]
    spec = import_case(case, tmp_path)[2]
    source = imported_arrays(tmp_path / f"{case}.toml")
    assert {a.dtype for a in source.values()} == {np.dtype(dtype)}
    params = make_weights(spec)
    path = tmp_path / f"{case}.xlsx"
    writer.save(builder.build(spec, params, spec.text), path)
    names = read_built(path).names
    for name, value in source.items():
        texts = cell_texts(path, names[name])
        assert max(map(significant_digits, texts.ravel())) <= most, name
        written = texts.astype(np.float64).reshape(value.shape)
        assert np.array_equal(written, shortest_decimals(value)), name
        assert np.array_equal(written.astype(dtype), value), name  # reads back
        assert np.array_equal(params[name], written), name  # what the reference uses


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imported")
    paths = {}
    for case in ("conv1d-npz", "linear-safetensors", "conv1d-safetensors-f16"):
        spec = import_case(case, folder)[2]
        paths[case] = folder / f"{case}.xlsx"
        writer.save(builder.build(spec, make_weights(spec), spec.text), paths[case])
    return paths


@pytest.fixture(scope="module")
def recomputed(built, tmp_path_factory):
    return lazy_recalc(built, tmp_path_factory)


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", ["conv1d-npz", "linear-safetensors", "conv1d-safetensors-f16"])
def test_imported_workbook_matches_the_reference_in_engines(case, engine, built, recomputed):
    checks = compare(read_built(built[case]), open_values(recomputed(engine)[case]), engine)
    failed = failures(checks)
    assert not failed, "\n".join(failed)
    assert {"logits", "h.1.attn.head1.weights", "output_text"} <= {c.block for c in checks}
    if case in PRECISE:  # the engine saved the checkpoint's numbers at their precision
        held = read_built(recomputed(engine)[case]).params
        for name, value in imported_arrays(built[case].with_suffix(".toml")).items():
            assert np.array_equal(held[name], shortest_decimals(value)), name


# --- mistakes -----------------------------------------------------------------------

def run_import(tmp_path, tensors, *options, vocab=TOKENS, name="ck.npz"):
    path = write(tensors, tmp_path / name)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    args = ["import", str(path), "--vocab", str(tmp_path / "vocab.json"),
            "-o", str(tmp_path / "out.toml"), *options]
    if "--heads" not in options:
        args += ["--heads", "2"]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("change, options, message", [
    (lambda t: t, ("--layout", "linear"),
     "'transformer.h.0.attn.c_attn.weight' has shape (8, 24); in the linear layout it "
     "must be (24, 8)"),
    (lambda t: t, ("--heads", "3"), "d_model 8 is not a multiple of --heads 3"),
    (lambda t: t, ("--max-seq", "9"), "--max-seq 9 is more than the checkpoint's 8 positions"),
    (lambda t: {k: v for k, v in t.items() if "h.1.ln_2.weight" not in k}, (),
     "the checkpoint lacks 'transformer.h.1.ln_2.weight' of shape (8,)"),
    (lambda t: t | {"transformer.h.0.mlp.c_proj.weight": np.zeros((D, D_FF))}, (),
     "'transformer.h.0.mlp.c_proj.weight' has shape (8, 12); in the conv1d layout it "
     "must be (12, 8)"),
    (lambda t: t | {"transformer.h.2.ln_1.weight": np.ones(D)}, (),
     "the checkpoint lacks 'transformer.h.2.attn.c_attn.weight'"),
    (lambda t: t | {"transformer.extra": np.ones(2)}, (), "does not use: extra"),
    (lambda t: t | {"transformer.ln_f.bias": np.full(D, np.nan)}, (),
     "'transformer.ln_f.bias' holds NaN or infinite values"),
    (lambda t: {k: v for k, v in t.items() if "wpe" not in k}, (),
     "the checkpoint lacks 'transformer.wpe.weight'"),
])
def test_mistakes_are_one_error_line_and_write_nothing(tmp_path, change, options, message):
    result = run_import(tmp_path, change(gpt2_checkpoint("conv1d", True, True, True)), *options)
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.count("Error:") == 1
    assert not (tmp_path / "out.toml").exists() and not (tmp_path / "out.npz").exists()


def _broken_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    good = write(gpt2_checkpoint("conv1d", True, True, True), folder / "good.npz").read_bytes()
    np.save(folder / "wte.npy", np.ones((V, D)))
    files = {"renamed.npz": (folder / "wte.npy").read_bytes(),
             "cut.npz": good[:len(good) // 2], "notes.npz": b"not a checkpoint\n",
             "random.npz": np.random.default_rng(1).bytes(500)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    np.savez(folder / "objects.npz", **{"transformer.wte.weight": np.array([None, 1], object)})
    reasons = {"renamed.npz": "it is a single array (.npy); np.savez writes named arrays",
               "cut.npz": "the zip archive is damaged, cut short or encrypted",
               "notes.npz": "it is not a zip archive of arrays",
               "random.npz": "it is not a zip archive of arrays",
               "objects.npz": "array 'transformer.wte.weight' holds Python objects, not numbers"}
    return {name: (folder / name, reason) for name, reason in reasons.items()}


@pytest.mark.parametrize("name", ["renamed.npz", "cut.npz", "notes.npz", "random.npz",
                                  "objects.npz"])
def test_a_file_that_is_no_checkpoint_is_one_error_line(tmp_path, name):
    path, reason = _broken_checkpoints(tmp_path)[name]
    result = CliRunner().invoke(main, ["import", str(path), "--heads", "2",
                                       "-o", str(tmp_path / "out.toml")])
    assert result.exit_code == 2
    assert result.output == (f"Error: checkpoint {path} is not a valid checkpoint (.npz): "
                             f"{reason}\n")
    assert not (tmp_path / "out.toml").exists() and not (tmp_path / "out.npz").exists()


def raw_safetensors(path: Path, dtype: str, data: bytes) -> Path:
    """A .safetensors file of one 2 x 2 tensor `wte` of `dtype`, written by hand: NumPy
    cannot make bfloat16 ones."""
    header = json.dumps({"transformer.wte.weight": {
        "dtype": dtype, "shape": [2, 2], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize("dtype, data, messages", [
    ("BF16", b"\x80\x3f" * 4, ["holds tensors NumPy cannot read (", "bfloat16",
                                "); save them as float32 or float16"]),
    ("C64", bytes(32), ["tensor 'transformer.wte.weight' of {path} holds complex64 values, "
                        "not real numbers"]),
], ids=["bfloat16", "complex64"])
def test_a_checkpoint_of_numbers_numpy_cannot_take_is_one_error_line(tmp_path, dtype, data,
                                                                      messages):
    path = raw_safetensors(tmp_path / "ck.safetensors", dtype, data)
    result = CliRunner().invoke(main, ["import", str(path), "--heads", "1",
                                       "-o", str(tmp_path / "out.toml")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    for message in messages:
        assert message.format(path=path) in result.output
    assert not (tmp_path / "out.toml").exists() and not (tmp_path / "out.npz").exists()


def test_a_vocabulary_of_the_wrong_size_is_named(tmp_path):
    result = run_import(tmp_path, gpt2_checkpoint("conv1d", True, True, True), vocab=TOKENS[:-1])
    assert result.exit_code == 2
    assert "has 11 tokens; the checkpoint's wte has 12 rows" in result.output


def test_vocab_json_object_of_ids_is_read_in_id_order(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"b": 1, "a": 0, "c": 2}))
    assert checkpoint.read_vocab(path, 3) == ["a", "b", "c"]


def test_without_safetensors_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    path = write({"x": np.ones(2)}, tmp_path / "ck.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(checkpoint.CheckpointError, match=r"pip install 'xlformer\[import\]'"):
        checkpoint.read_tensors(path)
