"""Property-based: any small valid spec recomputes to the reference in both engines, and any
invalid spec ends in one `Error:` line, exit code 2 and no file.

Examples are derandomized so CI sees the same ones every run; XLFORMER_EXAMPLES raises
the count of the engine property for a longer local search.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import failures, require_engine
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from specgen import random_tables, random_text, to_toml

from xlformer import builder, recalc, writer
from xlformer.cli import main
from xlformer.reader import open_values, read_built
from xlformer.spec import parse_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

pytestmark = pytest.mark.slow

ENGINE_EXAMPLES = int(os.environ.get("XLFORMER_EXAMPLES", "8"))
FIXED = settings(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


# Each example starts both engines, so a failure is reported as found, not shrunk.
@settings(FIXED, max_examples=ENGINE_EXAMPLES, phases=[Phase.generate])
@given(rng=st.randoms(use_true_random=False))
def test_any_small_valid_spec_matches_the_reference_in_both_engines(rng):
    for engine in recalc.ENGINES:
        require_engine(engine)
    spec = parse_spec(to_toml(random_tables(rng, "property")))
    text = random_text(rng, list(spec.vocab.tokens), spec.model.max_seq)
    with tempfile.TemporaryDirectory(prefix="xlformer-prop-") as tmp:
        path = Path(tmp) / "p.xlsx"
        writer.save(builder.build(spec, make_weights(spec), text), path)
        built = read_built(path)
        for engine in recalc.ENGINES:
            [out] = recalc.recalc([path], engine, Path(tmp) / engine)
            checks = compare(built, open_values(out), engine)
            failed = failures(checks)
            assert not failed, f"{engine}, text {text!r}:\n{spec.source}\n" + "\n".join(failed)


# One way to break a valid spec: (section, key, value); value None deletes the key.
BREAKS = [
    ("", "name", None), ("", "name", "a/b"), ("", "name", 7), ("", "nmae", "x"),
    ("model", "max_seq", None), ("model", "max_seq", 0), ("model", "d_model", -3),
    ("model", "n_head", 0), ("model", "head_size", 0), ("model", "n_layer", -1),
    ("model", "n_layer", "2"), ("model", "d_ff", 0), ("model", "mlp", "yes"),
    ("model", "norm", "layer"), ("model", "activation", "swish"), ("model", "positions", "rope"),
    ("model", "ln_eps", float("nan")), ("model", "ln_eps", -1.0), ("model", "causal", 1),
    ("model", "binary_codes", list(range(8))), ("model", "n_heads", 2), ("model", "dmodel", 4),
    ("vocab", "tokens", []), ("vocab", "tokens", ["a", "a"]), ("vocab", "tokens", ["ab"]),
    ("vocab", "tokens", ["a", ""]), ("vocab", "tokens", ["a", "\u0007"]),
    ("vocab", "pad", "\u00e9"), ("vocab", "set", "klingon"), ("head", "tied", "no"),
    ("head", "bais", True),
    ("weights", "source", "magic"), ("weights", "std", float("inf")), ("weights", "seed", 1.5),
    ("weights", "source", "npz"), ("weights", "file", "missing.npz"),
    ("", "text", "\u00e9\u00e9"), ("", "text", "x" * 9), ("", "extra", 1),
]


@settings(FIXED, max_examples=150)
@given(rng=st.randoms(use_true_random=False), breaks=st.lists(st.sampled_from(BREAKS),
                                                               min_size=1, max_size=3))
def test_any_invalid_spec_ends_in_one_error_line_and_no_file(rng, breaks):
    tables = random_tables(rng, "broken")
    for section, key, value in breaks:
        if key == "file":
            tables["weights"]["source"] = "npz"
        if value is None:
            tables[section].pop(key, None)
        else:
            tables[section][key] = value
    _assert_clean_error(to_toml(tables))


@settings(FIXED, max_examples=100)
@given(source=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_garbage_spec_ends_in_one_error_line_and_no_file(source):
    _assert_clean_error(source)


def _assert_clean_error(source: str | bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="xlformer-bad-") as tmp:
        folder = Path(tmp)
        spec = folder / "s.toml"
        spec.write_bytes(source if isinstance(source, bytes) else source.encode())
        result = CliRunner().invoke(main, ["build", str(spec), "-o", str(folder / "s.xlsx")])
        assert result.exit_code == 2, f"{result.output}\n{result.exception!r}\n{source}"
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert [p.name for p in folder.iterdir()] == ["s.toml"]
