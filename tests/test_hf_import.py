"""A Hugging Face GPT-2 folder imported as it is (config.json, model.safetensors, vocab.json,
merges.txt), and text in through its byte-level BPE.

Everything is made here: a tiny random GPT-2 under Hugging Face's names (with and without
the `transformer.` prefix), and a byte-level BPE trained with `tokenizers` on a few
sentences. The tokenizer that trained (an object of this test, not the files xlformer
reads) says what the ids of a text must be; `gpt2_forward` (test_checkpoint.py) computes
GPT-2 from the checkpoint's own tensors with the heads config.json gives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import (
    failures,
    lazy_recalc,
    require_engine,
    require_tokenizers,
    shortest_decimals,
)
from safetensors.numpy import load_file, save_file
from test_checkpoint import D_FF, N_CTX, N_HEAD, N_LAYER, D, gpt2_checkpoint, gpt2_forward

from xlformer import bpe, recalc, reference
from xlformer.cli import main
from xlformer.reader import cell_value, open_values, read_built
from xlformer.spec import load_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

CORPUS = ["Hello world, hello there.", "The world is wide and the sea is deep.",
          "Hello again, world! The sea is wide."]
TEXT = "Hello world, the sea."  # fewer tokens than N_CTX, so it fits
SPECIAL = "<|endoftext|>"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained():
    """A byte-level BPE trained here: GPT-2's kind of tokenizer, a few hundred tokens."""
    require_tokenizers()
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(CORPUS, vocab_size=300, min_frequency=2,
                                  show_progress=False, special_tokens=[SPECIAL])
    return tokenizer


def hf_folder(folder: Path, trained, prefix: bool = True, config: dict | None = None,
              without_token: str | None = None) -> tuple[Path, dict]:
    """A Hugging Face GPT-2 folder as save_pretrained writes it: the tied head left out,
    float32 tensors. `config` changes config.json (None deletes a key); `without_token`
    drops a token from vocab.json (the ids after it move down). Returns the folder and
    the checkpoint's tensors as the file holds them, with the tied head."""
    folder.mkdir()
    trained.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    if without_token is not None:
        kept = [t for t in sorted(vocab, key=vocab.__getitem__) if t != without_token]
        vocab = {t: i for i, t in enumerate(kept)}
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    V = len(vocab)
    ck = gpt2_checkpoint("conv1d", prefix, bias=True, tied=True)
    wte = "transformer.wte.weight" if prefix else "wte.weight"
    ck[wte] = np.random.default_rng(1).normal(0, 0.5, (V, D))
    del ck["lm_head.weight"]  # tied: Hugging Face does not save it
    ck = {k: v.astype(np.float32) for k, v in ck.items()}
    save_file(ck, str(folder / "model.safetensors"))
    settings = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_head": N_HEAD,
                "n_embd": D, "n_layer": N_LAYER, "n_positions": N_CTX, "n_ctx": N_CTX,
                "n_inner": D_FF, "vocab_size": V, "layer_norm_epsilon": 1e-5,
                "activation_function": "gelu_new", "resid_pdrop": 0.1,
                "scale_attn_weights": True, "tie_word_embeddings": True}
    for key, value in (config or {}).items():
        if value is None:
            settings.pop(key)
        else:
            settings[key] = value
    (folder / "config.json").write_text(json.dumps(settings), encoding="utf-8")
    tensors = {k: shortest_decimals(v) for k, v in ck.items()}  # as the sheet holds them
    return folder, tensors | {"lm_head.weight": tensors[wte]}


def imported(tmp_path: Path, trained, *options, prefix: bool = True, **changes) -> Path:
    folder, _ = hf_folder(tmp_path / "gpt2", trained, prefix, **changes)
    result = run("import", folder, "-o", tmp_path / "model.toml", *options)
    assert result.exit_code == 0, result.output
    return tmp_path / "model.toml"


# --- the import -----------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [True, False], ids=["transformer.", "bare"])
def test_import_reads_config_json_and_computes_gpt2(prefix, trained, tmp_path):
    folder, ck = hf_folder(tmp_path / "gpt2", trained, prefix)
    result = run("import", folder, "-o", tmp_path / "model.toml", "--text", TEXT)
    assert result.exit_code == 0, result.output  # no --heads: config.json gives them
    spec = load_spec(tmp_path / "model.toml")
    m = spec.model
    assert (m.n_head, m.n_layer, m.d_model, m.d_ff, m.max_seq, m.n_positions, m.ln_eps) == (
        N_HEAD, N_LAYER, D, D_FF, N_CTX, N_CTX, 1e-5)
    want = trained.encode(TEXT).ids
    assert spec.reads_ids and spec.ids == tuple(want)
    assert len(spec.vocab) == trained.get_vocab_size()
    # the tokenizer's files are copied beside the spec, which names them
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / f"model.{name}").read_bytes() == (folder / name).read_bytes()
    trace = reference.forward(spec, make_weights(spec), spec.ids)
    assert list(trace["input.ids"][:len(want)]) == want
    np.testing.assert_allclose(trace["logits"], gpt2_forward(ck, trace["input.ids"], "conv1d"),
                               rtol=1e-9, atol=1e-9)


def test_config_json_sets_epsilon_activation_and_scaling(trained, tmp_path):
    spec = load_spec(imported(tmp_path, trained, config={
        "layer_norm_epsilon": 1e-6, "activation_function": "relu",
        "scale_attn_weights": False}))
    assert (spec.model.ln_eps, spec.model.activation, spec.model.scale) == (1e-6, "relu", False)


def test_heads_that_agree_with_config_json_are_accepted(trained, tmp_path):
    assert load_spec(imported(tmp_path, trained, "--heads", N_HEAD)).model.n_head == N_HEAD


def test_tokens_are_shown_as_the_text_they_stand_for(trained, tmp_path):
    spec = load_spec(imported(tmp_path, trained))
    vocab = trained.get_vocab()
    assert spec.vocab.tokens[vocab["Ġworld"]] == " world"
    assert spec.vocab.tokens[vocab["Ċ"]] == "\\n"
    assert spec.vocab.tokens[vocab[SPECIAL]] == SPECIAL


def test_shown_decodes_gpt2s_bytes():
    require_tokenizers()
    from tokenizers.pre_tokenizers import ByteLevel

    # GPT-2's byte alphabet is the one tokenizers uses
    assert sorted(bpe.CHAR_OF.values()) == sorted(ByteLevel.alphabet())
    assert bpe.CHAR_OF[ord(" ")] == "Ġ" and bpe.CHAR_OF[ord("\n")] == "Ċ"
    assert bpe.shown("Ġworld") == " world"
    assert bpe.shown("Ã©t") == "ét"  # é is the bytes c3 a9
    assert bpe.shown("âĢ") == "\\xe2\\x80"  # the first two bytes of '—' (e2 80 94)
    assert bpe.shown("ĉĊčĀ") == "\\t\\n\\r\\u0000"
    assert bpe.shown("Âł") == "\\u00a0"  # no-break space: not ' '


# --- text in --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(trained, tmp_path_factory):
    """One workbook built from the imported spec with --text, from the spec's folder."""
    folder = tmp_path_factory.mktemp("hf")
    spec = imported(folder, trained)
    with pytest.MonkeyPatch.context() as mp:  # `build` from the spec's folder, as a user does
        mp.chdir(folder)
        result = run("build", spec.name, "--text", "Hello there, world!", "-o", "text.xlsx")
    assert result.exit_code == 0, result.output
    return {"text": folder / "text.xlsx"}


@pytest.fixture(scope="module")
def recomputed(built, tmp_path_factory):
    return lazy_recalc(built, tmp_path_factory)


def test_build_text_types_the_tokenizers_ids(built, trained):
    b = read_built(built["text"])
    want = trained.encode("Hello there, world!").ids
    assert b.text[:len(want)] == tuple(want) and set(b.text[len(want):]) == {None}
    # the workbook carries its tokens: read back without the tokenizer files
    assert b.spec.vocab.tokens[trained.get_vocab()["Ġworld"]] == " world"


@pytest.mark.parametrize("engine", recalc.ENGINES)
def test_text_workbook_matches_the_reference_in_engines(engine, built, recomputed):
    b = read_built(built["text"])
    values = open_values(recomputed(engine)["text"])
    checks = compare(b, values, engine)
    assert not failures(checks), "\n".join(failures(checks))
    assert {"logits", "h.1.attn.head1.weights", "output_text"} <= {c.block for c in checks}
    # the Input sheet's token column spells the text, one token beside each typed id
    n = sum(v is not None for v in b.text)
    chars = b.names["input.chars"]
    assert "".join(cell_value(values, chars, i) for i in range(n)) == "Hello there, world!"


@pytest.mark.slow
def test_verify_text_tokenizes_before_it_builds(trained, tmp_path):
    require_engine("gnumeric")
    spec = imported(tmp_path, trained)
    result = run("verify", spec, "--text", "the sea", "--engine", "gnumeric")
    assert result.exit_code == 0, result.output
    want = trained.encode("the sea").ids
    assert result.output.splitlines()[0] == f"input ids: {', '.join(map(str, want))}"


def test_text_of_more_tokens_than_max_seq_is_an_error(trained, tmp_path):
    spec = imported(tmp_path, trained, "--max-seq", 4)
    text = "Hello there, world!"
    n = len(trained.encode(text).ids)
    for args in (("build", spec, "-o", tmp_path / "long.xlsx"), ("verify", spec)):
        result = run(*args, "--text", text)
        assert result.exit_code == 2
        assert result.output == f"Error: input text is {n} tokens, more than max_seq (4)\n"
    assert not (tmp_path / "long.xlsx").exists()


def test_text_the_vocabulary_cannot_spell_is_an_error(trained, tmp_path):
    # a byte-level BPE encodes every text when it has all 256 byte tokens; this one lacks
    # the byte c3, the first of 'é', which tokenizers would silently leave out
    spec = imported(tmp_path, trained, without_token="Ã")
    result = run("build", spec, "--text", "café", "-o", tmp_path / "cafe.xlsx")
    assert result.exit_code == 2
    assert result.output == ("Error: the tokenizer cannot encode 'é' at 3: its vocabulary has "
                             "no token for the byte 0xc3\n")
    assert not (tmp_path / "cafe.xlsx").exists()


def test_the_end_of_text_token_is_read_as_one_token(trained, tmp_path):
    text = SPECIAL + "Hello world"
    spec = load_spec(imported(tmp_path, trained, "--text", text))
    assert spec.ids == tuple(trained.encode(text).ids)
    assert spec.ids[0] == trained.get_vocab()[SPECIAL] and len(spec.ids) < 5


def test_merges_without_vocab_json_are_left_out(trained, tmp_path):
    folder, _ = hf_folder(tmp_path / "gpt2", trained)
    (folder / "vocab.json").unlink()
    result = run("import", folder, "-o", tmp_path / "model.toml")
    assert result.exit_code == 0, result.output
    assert "note: " in result.output and "merges.txt is not used" in result.output
    spec = load_spec(tmp_path / "model.toml")
    assert spec.vocab.bpe is None and spec.vocab.tokens[:3] == ("0", "1", "2")
    assert not list(tmp_path.glob("model.*.*"))


def test_without_merges_the_workbook_reads_ids_and_text_is_refused(trained, tmp_path):
    folder, _ = hf_folder(tmp_path / "gpt2", trained)
    (folder / "merges.txt").unlink()
    result = run("import", folder, "-o", tmp_path / "model.toml", "--ids", "5 6")
    assert result.exit_code == 0, result.output
    assert "note: " in result.output and "no merges.txt" in result.output
    spec = load_spec(tmp_path / "model.toml")
    assert spec.ids == (5, 6) and spec.vocab.merges is None
    assert spec.vocab.tokens[trained.get_vocab()["Ġworld"]] == " world"
    assert not (tmp_path / "model.merges.txt").exists()
    result = run("build", tmp_path / "model.toml", "--text", "hello", "-o", tmp_path / "x.xlsx")
    assert result.exit_code == 2 and result.output.count("Error:") == 1
    assert "BPE vocabulary has no merges" in result.output and not (tmp_path / "x.xlsx").exists()
    result = run("import", folder, "-o", tmp_path / "again.toml", "--text", "hello")
    assert result.exit_code == 2 and "has no merges.txt" in result.output
    assert not (tmp_path / "again.toml").exists()


def test_without_tokenizers_the_error_says_how_to_install_it(trained, tmp_path, monkeypatch):
    spec = imported(tmp_path, trained)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    result = run("build", spec, "--text", "hello", "-o", tmp_path / "x.xlsx")
    assert result.exit_code == 2
    assert result.output == ("Error: tokenizing text with a BPE vocabulary needs the "
                             "tokenizers package: pip install 'xlformer[bpe]'\n")
    assert run("build", spec, "--ids", "1 2", "-o", tmp_path / "x.xlsx").exit_code == 0


# --- mistakes in the folder -----------------------------------------------------------

@pytest.mark.parametrize("config, message", [
    ({"n_head": 3}, "config.json's n_head 3 does not divide d_model 8"),
    ({"n_head": None}, "config.json's n_head must be a positive whole number, not missing"),
    ({"n_head": 0}, "config.json's n_head must be positive, not 0"),
    ({"n_layer": 3}, "config.json says n_layer = 3, but the weights have 2 layers"),
    ({"n_positions": 16}, "config.json says n_positions = 16, but wpe has 8 rows"),
    ({"n_ctx": 1024}, "config.json says n_ctx = 1024, but wpe has 8 rows"),
    ({"n_embd": 16}, "config.json says n_embd = 16, but wte has 8 columns"),
    ({"vocab_size": 50257}, "config.json says vocab_size = 50257, but wte has"),
    ({"n_inner": 32}, "config.json says n_inner = 32, but mlp.c_fc has 12 outputs"),
    ({"activation_function": "gelu"}, "config.json's activation_function 'gelu' is not one"),
    ({"scale_attn_by_inverse_layer_idx": True},
     "config.json's scale_attn_by_inverse_layer_idx = true is not something the spec can"),
    ({"add_cross_attention": True}, "config.json's add_cross_attention = true"),
    ({"model_type": "llama"}, "config.json's model_type is 'llama'; xlformer imports GPT-2"),
    ({"layer_norm_epsilon": "small"}, "config.json's layer_norm_epsilon must be a positive"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings = false, but the weights have no "
     "lm_head.weight"),
])
def test_a_config_that_disagrees_is_one_error_line(config, message, trained, tmp_path):
    folder, _ = hf_folder(tmp_path / "gpt2", trained, config=config)
    assert_refused(run("import", folder, "-o", tmp_path / "model.toml"), message, tmp_path)


@pytest.mark.parametrize("mistake, message", [
    ("no weights", "has no model.safetensors"),
    ("pytorch_model.bin", "has pytorch_model.bin but no model.safetensors: reading it needs "
     "torch"),
    ("no config", "has no config.json"),
    ("broken config", "config.json is not a readable JSON file"),
    ("--heads 4", "--heads 4 disagrees with config.json's n_head 2"),
    ("--vocab", "--vocab is for a checkpoint file"),
    ("sharded", "holds a sharded checkpoint (model.safetensors.index.json)"),
    ("untied head", "config.json says tie_word_embeddings = true, but lm_head.weight differs"),
])
def test_a_folder_that_is_no_gpt2_is_one_error_line(mistake, message, trained, tmp_path):
    folder, _ = hf_folder(tmp_path / "gpt2", trained)
    options = []
    if mistake in ("no weights", "pytorch_model.bin"):
        (folder / "model.safetensors").unlink()
        if mistake == "pytorch_model.bin":
            (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a pickle inside")
    elif mistake == "no config":
        (folder / "config.json").unlink()
    elif mistake == "broken config":
        (folder / "config.json").write_text("{n_head: 2")
    elif mistake == "sharded":
        (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    elif mistake == "untied head":
        tensors = load_file(str(folder / "model.safetensors"))
        tensors["lm_head.weight"] = tensors["transformer.wte.weight"] + 1
        save_file(tensors, str(folder / "model.safetensors"))
    elif mistake == "--heads 4":
        options = ["--heads", "4"]
    else:
        options = ["--vocab", folder / "vocab.json"]
    assert_refused(run("import", folder, "-o", tmp_path / "model.toml", *options), message,
                   tmp_path)


def test_a_checkpoint_file_still_needs_heads(trained, tmp_path):
    folder, _ = hf_folder(tmp_path / "gpt2", trained)
    assert_refused(run("import", folder / "model.safetensors", "-o", tmp_path / "model.toml"),
                   "give --heads: a checkpoint file does not say how many heads", tmp_path)
    result = run("import", folder / "model.safetensors", "--heads", N_HEAD,
                 "-o", tmp_path / "model.toml")
    assert result.exit_code == 0, result.output


def assert_refused(result, message: str, folder: Path) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert message in result.output
    assert not list(folder.glob("model.*")), "an import that fails writes nothing"
