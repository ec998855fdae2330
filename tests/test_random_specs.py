"""Seeded random configurations, recomputed in both engines, match the reference.

The templates fix one combination of switches each; these specs mix them (norm x
positions x mask x residual x bias x head x activation x sizes), so a layout or
formula bug in a combination no template uses still shows. All of them are
recomputed in one LibreOffice call and one Gnumeric process each.
"""

from __future__ import annotations

import random
import string

import pytest
from helpers import lazy_recalc

from xlformer import builder, recalc, reference, writer
from xlformer.reader import open_values, read_built
from xlformer.spec import parse_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

COUNT = 12


def random_spec(seed: int) -> str:
    rng = random.Random(seed)
    n_head, head_size = rng.randint(1, 3), rng.randint(1, 4)
    d_model = rng.choice([n_head * head_size, rng.randint(2, 8)])
    max_seq = rng.randint(1, 7)
    # every pairing of positional encoding and norm across the 12 seeds
    positions = ["none", "learned", "sinusoidal", "binary"][seed % 4]
    norm = ["pre", "post", "none"][seed // 4 % 3]
    tokens = rng.sample(" " + string.ascii_letters + string.digits + "=+-@'\"", rng.randint(2, 12))
    lines = [
        f'name = "random-{seed}"',
        "[vocab]",
        "tokens = [" + ", ".join(_toml_str(t) for t in tokens) + "]",
        f"pad = {_toml_str(tokens[0])}",
        "[model]",
        f"max_seq = {max_seq}", f"d_model = {d_model}", f"n_head = {n_head}",
        f"head_size = {head_size}", f"n_layer = {rng.randint(1, 2)}",
        f"mlp = {_b(rng.random() < 0.7)}", f"d_ff = {rng.randint(1, 6)}",
        f'activation = "{rng.choice(["relu", "gelu"])}"',
        f'norm = "{norm}"',
        f"ln_eps = {rng.choice([1e-5, 1e-3])}",
        f'positions = "{positions}"',
        f"causal = {_b(rng.random() < 0.5)}", f"scale = {_b(rng.random() < 0.7)}",
        f"residual = {_b(rng.random() < 0.7)}", f"bias = {_b(rng.random() < 0.5)}",
    ]
    if positions == "binary":
        bits = rng.randint(1, min(3, d_model))
        lines.append(f"binary_codes = {[rng.randrange(2 ** bits) for _ in range(max_seq)]}")
    lines += ["[head]", f"tied = {_b(rng.random() < 0.5)}", f"bias = {_b(rng.random() < 0.5)}",
              "[weights]", 'source = "random"', f"seed = {seed}",
              f"std = {rng.choice([0.1, 0.5, 1.5])}"]
    return "\n".join(lines) + "\n"


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def random_text(seed: int, tokens: tuple[str, ...], max_seq: int) -> str:
    rng = random.Random(seed + 1000)
    return "".join(rng.choice(tokens) for _ in range(rng.randint(0, max_seq)))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("random")
    out = {}
    for seed in range(COUNT):
        spec = parse_spec(random_spec(seed))
        text = random_text(seed, spec.vocab.tokens, spec.model.max_seq)
        path = folder / f"random-{seed}.xlsx"
        writer.save(builder.build(spec, make_weights(spec), text), path)
        out[seed] = path
    return out


@pytest.fixture(scope="module")
def recomputed(cases, tmp_path_factory):
    return lazy_recalc(cases, tmp_path_factory)


def test_the_random_specs_cover_every_switch():
    specs = [parse_spec(random_spec(seed)).model for seed in range(COUNT)]
    for attr, values in [("norm", {"pre", "post", "none"}),
                         ("positions", {"none", "learned", "sinusoidal", "binary"}),
                         ("causal", {True, False}), ("residual", {True, False}),
                         ("mlp", {True, False}), ("activation", {"relu", "gelu"})]:
        assert {getattr(m, attr) for m in specs} == values, attr
    assert any(m.d_attn != m.d_model for m in specs)


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("seed", range(COUNT))
def test_random_spec_matches_reference(seed, engine, cases, recomputed):
    built = read_built(cases[seed])
    checks = compare(built, open_values(recomputed(engine)[seed]), engine)
    failed = [f"{c.block}: {'; '.join(c.problems)}" for c in checks if not c.ok]
    assert not failed, f"spec:\n{random_spec(seed)}\n" + "\n".join(failed)
    assert len(checks) == len(reference.forward(built.spec, built.params, built.text)) + 2
