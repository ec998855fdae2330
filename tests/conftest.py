"""Imported before any test module.

xlformer first, so that openpyxl, which the tests import too, serialises as the writer
needs whether lxml is installed or not (see xlformer/__init__.py).

The two tiers: `bash scripts/test --fast` runs `pytest -m "not slow"`. Slow are the
engine tests (parametrized over `engine`, or reading the `recomputed` fixture), unless
their module is marked `fast` (the fast tier's own engine checks), and the tests marked
`slow` by hand: other engine and renderer runs, and long computations.
"""

from __future__ import annotations

import pytest

import xlformer  # noqa: F401


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("fast"):
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "engine" in params or "recomputed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
