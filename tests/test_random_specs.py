"""Seeded random configurations, recomputed in both engines, match the reference.

The templates fix one combination of switches each; these specs mix them (norm x
positions x mask x residual x bias x head x activation x sizes), so a layout or
formula bug in a combination no template uses still shows. All of them are
recomputed in one LibreOffice call and one Gnumeric process each.
"""

from __future__ import annotations

import random

import pytest
from helpers import Workbooks, failures, lazy_recalc, selected
from specgen import random_tables, random_text, to_toml

from xlformer import builder, recalc, reference, writer
from xlformer.reader import open_values, read_built
from xlformer.spec import parse_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

COUNT = 12


def random_spec(seed: int) -> str:
    """Every pairing of positional encoding and norm across the 12 seeds."""
    rng = random.Random(seed)
    positions = ["none", "learned", "sinusoidal", "binary"][seed % 4]
    norm = ["pre", "post", "none"][seed // 4 % 3]
    return to_toml(random_tables(rng, f"random-{seed}", positions, norm))


def text_for(seed: int, spec) -> str:
    return random_text(random.Random(seed + 1000), list(spec.vocab.tokens), spec.model.max_seq)


@pytest.fixture(scope="module")
def cases(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("random")

    def make(seed: int):
        spec = parse_spec(random_spec(seed))
        path = folder / f"random-{seed}.xlsx"
        writer.save(builder.build(spec, make_weights(spec), text_for(seed, spec)), path)
        return path

    return Workbooks(range(COUNT), make, selected(request, "seed"))


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
    failed = failures(checks)
    assert not failed, f"spec:\n{random_spec(seed)}\n" + "\n".join(failed)
    assert len(checks) == len(reference.forward(built.spec, built.params, built.text)) + 2
