"""Random small specs for the tests: a table per TOML section, drawn from any `random.Random`
(a seeded one, or hypothesis's `st.randoms()`, which shrinks), and written out as TOML."""

from __future__ import annotations

import math
import random
import string

TOKENS = " " + string.ascii_letters + string.digits + "=+-@'\""


def random_tables(rng: random.Random, name: str, positions: str | None = None,
                  norm: str | None = None) -> dict[str, dict]:
    """A valid spec as tables: top-level keys under "", then one dict per section."""
    n_head, head_size = rng.randint(1, 3), rng.randint(1, 4)
    d_model = rng.choice([n_head * head_size, rng.randint(2, 8)])
    max_seq = rng.randint(1, 7)
    positions = positions or rng.choice(["none", "learned", "sinusoidal", "binary"])
    tokens = rng.sample(TOKENS, rng.randint(2, 12))
    model = {
        "max_seq": max_seq, "d_model": d_model, "n_head": n_head, "head_size": head_size,
        "n_layer": rng.randint(1, 2), "mlp": rng.random() < 0.7, "d_ff": rng.randint(1, 6),
        "activation": rng.choice(["relu", "gelu"]),
        "norm": norm or rng.choice(["pre", "post", "none"]),
        "ln_eps": rng.choice([1e-5, 1e-3]), "positions": positions,
        "causal": rng.random() < 0.5, "scale": rng.random() < 0.7,
        "residual": rng.random() < 0.7, "bias": rng.random() < 0.5,
    }
    if positions == "binary":
        bits = rng.randint(1, min(3, d_model))
        model["binary_codes"] = [rng.randrange(2**bits) for _ in range(max_seq)]
    return {
        "": {"name": name},
        "vocab": {"tokens": tokens, "pad": tokens[0]},
        "model": model,
        "head": {"tied": rng.random() < 0.5, "bias": rng.random() < 0.5},
        "weights": {"source": "random", "seed": rng.randrange(1000),
                    "std": rng.choice([0.1, 0.5, 1.5])},
    }


def random_text(rng: random.Random, tokens: list[str], max_seq: int) -> str:
    return "".join(rng.choice(tokens) for _ in range(rng.randint(0, max_seq)))


def to_toml(tables: dict[str, dict]) -> str:
    lines = [f"{k} = {_value(v)}" for k, v in tables.get("", {}).items()]
    for section, table in tables.items():
        if section:
            lines += [f"[{section}]", *(f"{k} = {_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return "[" + ", ".join(map(_value, v)) + "]"
    return repr(v)
