"""The fast tier's engine check: two small random models that between them use every
part of the builder a one-line bug could break (scores, mask, LayerNorm's gain and bias,
each head's slice of Q, K and V, both norm placements, biases, both heads), recomputed
in one LibreOffice run and one Gnumeric run and compared block by block."""

from __future__ import annotations

import pytest
from helpers import Workbooks, failures, lazy_recalc, selected
from specgen import to_toml

from xlformer import builder, recalc, writer
from xlformer.reader import open_values, read_built
from xlformer.spec import parse_spec
from xlformer.verify import compare
from xlformer.weights import make_weights

pytestmark = pytest.mark.fast

TOKENS = list("abcdexyz ")
SPECS = {
    # causal, pre-norm, three heads whose width (6) is not d_model (4), biases everywhere
    "causal-pre": ({"max_seq": 5, "d_model": 4, "n_head": 3, "head_size": 2, "n_layer": 2,
                    "d_ff": 6, "activation": "gelu", "norm": "pre", "positions": "learned",
                    "causal": True},
                   {"tied": False, "bias": True}, "badca"),
    # bidirectional, post-norm, sinusoidal positions, ReLU, tied head
    "bidir-post": ({"max_seq": 4, "d_model": 5, "n_head": 2, "head_size": 3, "n_layer": 1,
                    "d_ff": 3, "activation": "relu", "norm": "post",
                    "positions": "sinusoidal", "causal": False},
                   {"tied": True}, "zex"),
}


def spec_of(case: str):
    model, head, text = SPECS[case]
    tables = {"": {"name": case, "text": text}, "vocab": {"tokens": TOKENS, "pad": " "},
              "model": model, "head": head,
              "weights": {"source": "random", "seed": 7, "std": 0.8}}
    return parse_spec(to_toml(tables))


@pytest.fixture(scope="module")
def built(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fast")

    def make(case: str):
        spec = spec_of(case)
        path = folder / f"{case}.xlsx"
        writer.save(builder.build(spec, make_weights(spec), spec.text), path)
        return path

    return Workbooks(SPECS, make, selected(request, "case"))


@pytest.fixture(scope="module")
def recomputed(built, tmp_path_factory):
    return lazy_recalc(built, tmp_path_factory)


@pytest.mark.parametrize("engine", recalc.ENGINES)
@pytest.mark.parametrize("case", SPECS)
def test_small_models_match_the_reference(case, engine, built, recomputed):
    checks = compare(read_built(built[case]), open_values(recomputed(engine)[case]), engine)
    assert not failures(checks), "\n".join(failures(checks))
    assert {"h.0.ln_1", "h.0.attn.head2.weights" if case == "causal-pre"
            else "h.0.attn.head1.weights", "logits"} <= {c.block for c in checks}
