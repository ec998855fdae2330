"""Model specs: TOML in, frozen dataclasses out, validated where they enter.

A spec says what the model is (sizes and architectural switches), which tokens it
reads and writes, where its weights come from, and the text a fresh workbook shows.
Every later stage trusts a `Spec` and never re-checks it.
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import bpe

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class SpecError(ValueError):
    """A spec that cannot describe a model; the message names the key and the fix."""


# Named vocabularies: one token per character.
VOCAB_SETS: dict[str, tuple[str, ...]] = {
    "printable": tuple(chr(c) for c in range(32, 127)),  # printable ASCII, space first
    "lowercase": tuple(" " + string.ascii_lowercase),
    "letters": tuple(" " + string.ascii_letters),
    "digits": tuple(" " + string.digits),
}

# A spec's name names its workbook file: no folders, no spaces, nothing a shell quotes.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
ACTIVATIONS = ("relu", "gelu")
NORMS = ("pre", "post", "none")
POSITIONS = ("none", "learned", "sinusoidal", "binary")
WEIGHT_SOURCES = ("task", "random", "npz")
# Random weights' precision; float32 and float16 are written as their shortest decimals.
WEIGHT_DTYPES = ("float64", "float32", "float16")
TRAIN_TASKS = ("copy", "reverse", "sort", "lm")  # see train.py


INPUTS = ("text", "ids")


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]  # token id i is tokens[i]
    pad: str  # fills positions past the end of a shorter input
    input: str = "text"  # text: one character per token; ids: the user types token ids
    sep: str = ""  # between tokens in a decoded text: " " when tokens are bare ids (size)
    bpe: Path | None = None  # a byte-level BPE's vocab.json; tokens are its tokens as shown
    merges: Path | None = None  # its merges.txt: text given to build is tokenized with them

    @property
    def pad_id(self) -> int:
        return self.tokens.index(self.pad)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Model:
    max_seq: int  # positions in the workbook (T)
    d_model: int  # width of the residual stream
    n_head: int
    head_size: int  # width of one head's q, k and v
    n_layer: int
    mlp: bool = True  # feed-forward sub-layer in every block
    d_ff: int = 0  # feed-forward width (0 when mlp is off)
    activation: str = "gelu"  # relu | gelu (tanh form, as GPT-2)
    norm: str = "pre"  # pre (GPT-2) | post (original transformer) | none
    ln_eps: float = 1e-5
    positions: str = "learned"  # none | learned | sinusoidal | binary
    binary_codes: tuple[int, ...] = ()  # code of each position for positions = binary
    causal: bool = True  # position i attends to positions <= i only
    scale: bool = True  # scores divided by sqrt(head_size)
    residual: bool = True  # x + sublayer(x) around attention and mlp
    bias: bool = True  # biases on c_attn, c_proj, c_fc
    n_enc_layer: int = 0  # > 0: an encoder-decoder; n_layer counts the decoder's blocks
    n_positions: int = 0  # rows of the learned position table wpe (>= max_seq); 0: max_seq

    @property
    def positions_table(self) -> int:
        """Rows of wpe: the positions the model knows, of which the sheet uses max_seq."""
        return self.n_positions or self.max_seq

    @property
    def encoder_decoder(self) -> bool:
        return self.n_enc_layer > 0

    @property
    def d_attn(self) -> int:
        """Width of the concatenated heads."""
        return self.n_head * self.head_size

    @property
    def binary_bits(self) -> int:
        return max(max(self.binary_codes).bit_length(), 1)


@dataclass(frozen=True)
class Head:
    tied: bool = True  # logits = x . wte^T (GPT-2) instead of a separate lm_head
    bias: bool = False  # lm_head.bias added to the logits


@dataclass(frozen=True)
class Weights:
    source: str  # task | random | npz
    task: str = ""  # name of a hand-built task (source = task)
    sharpness: float = 5.0  # task weights' scale, see templates/reverse.toml
    seed: int = 0  # source = random
    std: float = 0.02  # source = random: normal(0, std) entries
    file: Path | None = None  # source = npz, resolved against the spec's folder
    dtype: str = "float64"  # source = random: the precision drawn (see WEIGHT_DTYPES)


@dataclass(frozen=True)
class Train:
    """How `xlformer train` made the weights: the defaults of its options."""

    task: str  # copy | reverse | sort | lm
    steps: int = 2000
    seed: int = 0
    batch: int = 32
    lr: float = 0.01
    text: Path | None = None  # task lm: the text, resolved against the spec's folder


@dataclass(frozen=True)
class Generate:
    """Live generation: the sheet feeds each position's chosen token to the next position."""

    steps: int  # tokens generated after the prompt (decoder-only) or the start token
    end: str = ""  # a target token that stops generation; "" for none
    start: str = ""  # encoder-decoder: the decoder's first input token
    temperature: float = 0.0  # logits / temperature before the softmax; 0: greedy argmax
    top_k: int = 0  # sample among the k most likely tokens; 0: among all
    top_p: float = 1.0  # sample among the most likely tokens whose mass reaches p; 1: all
    seed: int = 0  # seeds the uniform numbers that drive sampling, one per position
    uniforms: tuple[float, ...] = ()  # read back from a workbook's cells; () = from seed
    target: str = ""  # teacher forcing: the decoder reads this target instead of its choices


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    text: str  # the input a fresh workbook shows (vocab.input = "text")
    vocab: Vocab
    model: Model
    head: Head = field(default_factory=Head)
    weights: Weights = field(default_factory=lambda: Weights("random"))
    source: str = ""  # the TOML this spec was read from, kept in the workbook
    train: Train | None = None  # [train]: how the weights were trained, if they were
    generate: Generate | None = None  # None: one forward pass over the input
    target_vocab: Vocab | None = None  # encoder-decoder: the decoder's tokens (default: vocab)
    ids: tuple[int, ...] = ()  # the input a fresh workbook shows (vocab.input = "ids")

    @property
    def reads_ids(self) -> bool:
        """The input is a column of typed token ids rather than a text."""
        return self.vocab.input == "ids"

    @property
    def input(self) -> str | tuple[int, ...]:
        """The default input: the text, or the token ids."""
        return self.ids if self.reads_ids else self.text

    @property
    def out_vocab(self) -> Vocab:
        """The tokens the head chooses among (and the decoder reads when generating)."""
        return self.target_vocab or self.vocab


# --- reading ---------------------------------------------------------------

_TOP_KEYS = {"name": str, "description": str, "text": str, "ids": list}
_SECTIONS = ("vocab", "model", "head", "weights", "generate", "target_vocab", "train")
_VOCAB_KEYS = {"set": str, "tokens": list, "pad": str, "input": str, "size": int,
               "bpe": str, "merges": str}
_TARGET_VOCAB_KEYS = {"set": str, "tokens": list, "pad": str}
_MODEL_KEYS = {
    "max_seq": int, "d_model": int, "n_head": int, "head_size": int, "n_layer": int,
    "mlp": bool, "d_ff": int, "activation": str, "norm": str, "ln_eps": float,
    "positions": str, "binary_codes": list, "causal": bool, "scale": bool,
    "residual": bool, "bias": bool, "n_enc_layer": int, "n_positions": int,
}
_GENERATE_KEYS = {"steps": int, "end": str, "start": str, "temperature": float,
                  "top_k": int, "top_p": float, "seed": int, "target": str}
_HEAD_KEYS = {"tied": bool, "bias": bool}
_TRAIN_KEYS = {"task": str, "steps": int, "seed": int, "batch": int, "lr": float, "text": str}
_WEIGHT_KEYS = {
    "source": str, "task": str, "sharpness": float, "seed": int, "std": float, "file": str,
    "dtype": str,
}


def load_spec(path: Path) -> Spec:
    """Read and validate the spec at `path`."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read spec {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"spec {path} is not UTF-8 text (byte {e.start}: "
                        f"{e.object[e.start:e.start + 1]!r})") from None
    return parse_spec(source, base=Path(path).parent, origin=str(path))


def parse_spec(source: str, base: Path = Path("."), origin: str = "spec",
               bpe_tokens: Callable[[], list[str]] | None = None) -> Spec:
    """Parse TOML text into a validated Spec; relative files resolve against `base`.

    `bpe_tokens`, for a spec whose vocabulary is a BPE file (vocab.bpe), gives its
    tokens as shown instead of the file: a workbook holds them (its `vocab` block), and
    an import has them before it writes the file."""
    try:
        doc = tomllib.loads(source)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{origin} is not valid TOML: {e}") from None
    _check_keys(doc, {**_TOP_KEYS, **dict.fromkeys(_SECTIONS, dict)}, "")
    for key in ("name", "model", "vocab"):
        if key not in doc:
            raise SpecError(f"{origin} lacks '{key}'")
    if not NAME.fullmatch(doc["name"]):
        raise SpecError(f"name {doc['name']!r} must be 1 to 64 letters, digits, '_', '.' or "
                        "'-', not starting with '.' or '-'")
    description = doc.get("description", "")
    control = sorted({c for c in description if not (c.isprintable() or c in "\n\t")})
    if control:  # the workbook shows the description; a cell cannot hold these
        raise SpecError(f"description has control characters: {control}")
    vocab = _vocab(_section(doc, "vocab", _VOCAB_KEYS), base, bpe_tokens)
    model = _model(_section(doc, "model", _MODEL_KEYS))
    head = Head(**_section(doc, "head", _HEAD_KEYS))
    weights = _weights(_section(doc, "weights", _WEIGHT_KEYS), base)
    train = _train(_section(doc, "train", _TRAIN_KEYS), base) if "train" in doc else None
    target = (_vocab(_section(doc, "target_vocab", _TARGET_VOCAB_KEYS))
              if "target_vocab" in doc else None)
    generate = (_generate(_section(doc, "generate", _GENERATE_KEYS), model,
                          target or vocab) if "generate" in doc else None)
    if model.encoder_decoder and generate is None:
        raise SpecError("an encoder-decoder (model.n_enc_layer > 0) needs a [generate] "
                        "section with its start token")
    if target is not None and not model.encoder_decoder:
        raise SpecError("[target_vocab] is only for encoder-decoders (model.n_enc_layer > 0)")
    ids = _input_ids(doc, vocab, model, generate)
    spec = Spec(
        name=doc["name"],
        description=doc.get("description", ""),
        text=doc.get("text", ""),
        vocab=vocab,
        model=model,
        head=head,
        weights=weights,
        source=source,
        train=train,
        generate=generate,
        target_vocab=target,
        ids=ids,
    )
    if spec.reads_ids:
        check_ids(spec, spec.ids)
    else:
        check_text(spec, spec.text)
    return spec


def _input_ids(doc: dict, vocab: Vocab, model: Model, generate) -> tuple[int, ...]:
    """The spec's default token ids; only a spec whose vocab.input is "ids" has them."""
    if vocab.input == "text":
        if "ids" in doc:
            raise SpecError("'ids' is for vocab.input = \"ids\"; this spec reads 'text'")
        return ()
    if "text" in doc:
        raise SpecError("a spec with vocab.input = \"ids\" takes 'ids' (a list of token "
                        "ids), not 'text'")
    if generate is not None or model.encoder_decoder:
        raise SpecError("vocab.input = \"ids\" does not work with [generate] or "
                        "encoder-decoders yet")
    ids = doc.get("ids", [])
    bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise SpecError(f"'ids' must be whole numbers (token ids), not {bad[0]!r}")
    return tuple(ids)


def _section(doc: dict, name: str, keys: dict[str, type]) -> dict:
    table = doc.get(name, {})
    _check_keys(table, keys, name + ".")
    return dict(table)


def did_you_mean(word: str, choices, prefix: str = "") -> str:
    """The hint ` (did you mean 'choice'?)` for the choice closest to a mistyped word
    (with `prefix` before it), or nothing when no choice is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _check_keys(table: dict, keys: dict[str, type], prefix: str) -> None:
    for key, value in table.items():
        if key not in keys:
            raise SpecError(f"unknown key '{prefix}{key}'{did_you_mean(key, keys, prefix)}")
        want = keys[key]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise SpecError(f"'{prefix}{key}' must be {want.__name__}, not {value!r}")


def _vocab(table: dict, base: Path = Path("."),
           bpe_tokens: Callable[[], list[str]] | None = None) -> Vocab:
    given = [k for k in ("set", "tokens", "size", "bpe") if k in table]
    if len(given) != 1:
        raise SpecError("vocab needs exactly one of 'vocab.set', 'vocab.tokens', "
                        "'vocab.size' or 'vocab.bpe'")
    kind = table.get("input", "text")
    if kind not in INPUTS:
        raise SpecError(f"vocab.input must be one of {', '.join(INPUTS)}, not {kind!r}")
    if "merges" in table and "bpe" not in table:
        raise SpecError("vocab.merges (a BPE's merges.txt) needs vocab.bpe (its vocab.json)")
    sep, files = "", {k: base / table[k] for k in ("bpe", "merges") if k in table}
    if "bpe" in table:  # tokens as shown; the raw ones are unique, shown ones need not be
        if kind != "ids":
            raise SpecError("vocab.bpe (a BPE vocabulary) needs vocab.input = \"ids\"")
        try:
            tokens = tuple(bpe_tokens() if bpe_tokens is not None else
                           map(bpe.shown, bpe.read_vocab(files["bpe"])))
        except bpe.TokenizerError as e:
            raise SpecError(f"vocab.bpe: {e}") from None
        if not tokens or not all(tokens):
            raise SpecError(f"vocab.bpe: {files['bpe']} must hold tokens, none of them empty")
    elif "size" in table:  # no vocabulary file: each token is its id as text
        if kind != "ids":
            raise SpecError("vocab.size (tokens named by their ids) needs vocab.input = \"ids\"")
        if table["size"] < 1:
            raise SpecError(f"vocab.size must be positive, not {table['size']}")
        tokens, sep = tuple(str(i) for i in range(table["size"])), " "
    elif "set" in table:
        if table["set"] not in VOCAB_SETS:
            raise SpecError(f"vocab.set must be one of {', '.join(VOCAB_SETS)}")
        tokens = VOCAB_SETS[table["set"]]
    else:
        tokens = tuple(table["tokens"])
        if not tokens:
            raise SpecError("vocab.tokens is empty; give at least one token")
        bad = [t for t in tokens if not isinstance(t, str) or len(t) != 1]
        if kind == "ids":  # a typed id picks the token: it may be any string but ""
            bad = [t for t in tokens if not isinstance(t, str) or not t]
            if bad:
                raise SpecError(f"vocab.tokens must be non-empty strings, not {bad[0]!r}")
        elif bad:
            raise SpecError(f"vocab.tokens must be single characters, not {bad[0]!r} "
                            "(multi-character tokens need vocab.input = \"ids\")")
        control = [t for t in tokens if not t.isprintable()]
        if control:  # a spreadsheet cell cannot hold most of them
            raise SpecError(f"vocab.tokens has control characters: {control}")
        dupes = sorted(t for t, n in Counter(tokens).items() if n > 1)
        if dupes:
            raise SpecError(f"vocab.tokens has duplicates: {dupes}")
    pad = table.get("pad", tokens[0] if tokens else "")
    if pad not in tokens:
        raise SpecError(f"vocab.pad {pad!r} is not one of the vocabulary's tokens")
    return Vocab(tokens, pad, kind, sep, files.get("bpe"), files.get("merges"))


def _model(table: dict) -> Model:
    for key in ("max_seq", "d_model", "n_head", "n_layer"):
        if key not in table:
            raise SpecError(f"model lacks 'model.{key}'")
    d_model, n_head = table["d_model"], table["n_head"]
    if "head_size" not in table:
        if n_head <= 0 or d_model % n_head:
            raise SpecError("model.d_model must be a multiple of model.n_head, "
                            "or give model.head_size")
        table["head_size"] = d_model // n_head
    table.setdefault("mlp", True)
    if not table["mlp"]:
        table.setdefault("d_ff", 0)
    elif "d_ff" not in table:
        table["d_ff"] = 4 * d_model
    table["binary_codes"] = tuple(table.get("binary_codes", ()))
    table["ln_eps"] = float(table.get("ln_eps", 1e-5))
    table.setdefault("n_positions", table["max_seq"])
    model = Model(**table)
    _check_model(model)
    return model


def _check_model(m: Model) -> None:
    sizes = {"max_seq": m.max_seq, "d_model": m.d_model, "n_head": m.n_head,
             "head_size": m.head_size}
    if m.n_enc_layer < 0:
        raise SpecError(f"model.n_enc_layer must not be negative, not {m.n_enc_layer}")
    if m.encoder_decoder and m.n_layer < 1:
        raise SpecError("an encoder-decoder needs model.n_layer >= 1: the decoder's "
                        "blocks are where it reads the encoder")
    if m.mlp:
        sizes["d_ff"] = m.d_ff
    for key, value in sizes.items():
        if value <= 0:
            raise SpecError(f"model.{key} must be positive, not {value}")
    if m.n_positions < m.max_seq:
        raise SpecError(f"model.n_positions ({m.n_positions}) must be at least model.max_seq "
                        f"({m.max_seq}): the sheet reads one row of wpe per position")
    if m.n_positions != m.max_seq and m.positions != "learned":
        raise SpecError("model.n_positions (rows of the position table wpe) is only for "
                        "positions = 'learned'")
    if m.n_layer < 0:  # 0 layers is a bigram model: embeddings straight to logits
        raise SpecError(f"model.n_layer must be 0 or more, not {m.n_layer}")
    for key, value, allowed in (("activation", m.activation, ACTIVATIONS),
                                ("norm", m.norm, NORMS),
                                ("positions", m.positions, POSITIONS)):
        if value not in allowed:
            raise SpecError(f"model.{key} must be one of {', '.join(allowed)}, not {value!r}")
    if not (math.isfinite(m.ln_eps) and m.ln_eps > 0) and m.norm != "none":
        raise SpecError(f"model.ln_eps must be a positive number, not {m.ln_eps}")
    if m.positions == "binary":
        codes = m.binary_codes
        if len(codes) != m.max_seq or any(not isinstance(c, int) or c < 0 for c in codes):
            raise SpecError("model.binary_codes must give one non-negative integer "
                            f"per position ({m.max_seq})")
        if m.binary_bits > m.d_model:
            raise SpecError(f"model.binary_codes need {m.binary_bits} bits, "
                            f"more than d_model ({m.d_model})")
    elif m.binary_codes:
        raise SpecError("model.binary_codes is only for positions = 'binary'")


def _generate(table: dict, m: Model, vocab: Vocab) -> Generate:
    if "steps" not in table:
        table["steps"] = m.max_seq - 1
    table["temperature"] = float(table.get("temperature", 0.0))
    table["top_p"] = float(table.get("top_p", 1.0))
    gen = Generate(**table)
    if gen.temperature < 0:
        raise SpecError(f"generate.temperature must not be negative, not {gen.temperature}")
    if not 0 <= gen.top_k <= len(vocab):
        raise SpecError(f"generate.top_k must be 0 (all) .. {len(vocab)}, not {gen.top_k}")
    if not 0 < gen.top_p <= 1:
        raise SpecError(f"generate.top_p must be above 0 and at most 1 (1: all tokens), "
                        f"not {gen.top_p}")
    if not m.causal:
        raise SpecError("[generate] needs model.causal = true: a position may only read "
                        "the positions before it")
    if not 1 <= gen.steps < m.max_seq:
        raise SpecError(f"generate.steps must be 1 .. max_seq - 1 ({m.max_seq - 1}), "
                        f"not {gen.steps}")
    for key in ("end", "start"):
        token = getattr(gen, key)
        if token and token not in vocab.tokens:
            raise SpecError(f"generate.{key} {token!r} is not one of the "
                            f"{'target ' if m.encoder_decoder else ''}vocabulary's tokens")
    if m.encoder_decoder != bool(gen.start):
        raise SpecError("generate.start is needed by encoder-decoders and only by them")
    return gen


def _weights(table: dict, base: Path) -> Weights:
    source = table.get("source", "random")
    if source not in WEIGHT_SOURCES:
        raise SpecError(f"weights.source must be one of {', '.join(WEIGHT_SOURCES)}")
    if source == "task" and not table.get("task"):
        raise SpecError("weights.source = 'task' needs weights.task")
    if source == "npz":
        if not table.get("file"):
            raise SpecError("weights.source = 'npz' needs weights.file")
        table["file"] = base / table["file"]
    if "dtype" in table:
        if table["dtype"] not in WEIGHT_DTYPES:
            raise SpecError(f"weights.dtype must be one of {', '.join(WEIGHT_DTYPES)}, "
                            f"not {table['dtype']!r}")
        if source != "random":
            raise SpecError("weights.dtype is for source = 'random' (an .npz's arrays "
                            "keep their own; task weights are float64)")
    for key in ("sharpness", "std"):
        if key in table:
            table[key] = float(table[key])
            if not (math.isfinite(table[key]) and table[key] >= 0):
                raise SpecError(f"weights.{key} must be a finite number >= 0, "
                                f"not {table[key]}")
    return Weights(**{**table, "source": source})


def _train(table: dict, base: Path) -> Train:
    if table.get("task") not in TRAIN_TASKS:
        raise SpecError(f"train.task must be one of {', '.join(TRAIN_TASKS)}")
    for key in ("steps", "batch"):
        if table.get(key, 1) < 1:
            raise SpecError(f"train.{key} must be positive")
    if "lr" in table:
        table["lr"] = float(table["lr"])
        if table["lr"] <= 0:
            raise SpecError("train.lr must be positive")
    if (table["task"] == "lm") != ("text" in table):
        raise SpecError("train.text (a text file) is needed for train.task = 'lm', and only there")
    if "text" in table:
        table["text"] = base / table["text"]
    return Train(**table)


def check_text(spec: Spec, text: str) -> None:
    """Reject input text the model cannot read: too long, or outside the vocabulary."""
    if len(text) > spec.model.max_seq:
        raise SpecError(f"input text has {len(text)} characters, more than "
                        f"max_seq ({spec.model.max_seq})")
    unknown = [f"{c!r} at {i}" for i, c in enumerate(text) if c not in spec.vocab.tokens]
    if unknown:
        raise SpecError(f"input text has characters outside the vocabulary: "
                        f"{', '.join(unknown)}")


def check_ids(spec: Spec, ids) -> None:
    """Reject token ids the model cannot read: too many, or not ids of the vocabulary."""
    if len(ids) > spec.model.max_seq:
        raise SpecError(f"input has {len(ids)} token ids, more than "
                        f"max_seq ({spec.model.max_seq})")
    V = len(spec.vocab)
    bad = [f"{i!r} at {p}" for p, i in enumerate(ids) if not 0 <= i < V]
    if bad:
        raise SpecError(f"input has token ids outside 0..{V - 1}: {', '.join(bad)}")
