"""Shared test helpers: engines that must be present under CI, and workbook cases."""

from __future__ import annotations

import importlib.util
import os
import shutil
import string
from pathlib import Path

import numpy as np
import pytest

from xlformer import builder, catalog, recalc, writer
from xlformer.recalc import available
from xlformer.spec import load_spec
from xlformer.weights import make_weights


def require_engine(engine: str) -> None:
    """Skip when `engine` is absent, except under CI where it must be installed."""
    if not available(engine):
        _absent(f"{engine} is not installed "
                "(apt-get install -y libreoffice-calc-nogui gnumeric)")


def require_renderer() -> None:
    """LibreOffice and pdftoppm, under the same rule as the engines."""
    require_engine("libreoffice")
    if not shutil.which("pdftoppm"):
        _absent("pdftoppm is not installed (apt-get install -y poppler-utils)")


def require_lxml() -> None:
    """lxml (in the test extra), under the same rule: openpyxl serialises with it when
    it is installed, and many users have it."""
    if importlib.util.find_spec("lxml") is None:
        _absent("lxml is not installed (pip install -e '.[test]')")


def _absent(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def build_template(name: str, path: Path, text: str | None = None) -> Path:
    spec = load_spec(catalog.resolve(name))
    book = builder.build(spec, make_weights(spec), spec.input if text is None else text)
    writer.save(book, path)
    return path


def lazy_recalc(paths: dict, folder_factory):
    """engine -> {key: recomputed path}: all files in one engine run, on first use."""
    done: dict[str, dict] = {}

    def get(engine: str) -> dict:
        require_engine(engine)
        if engine not in done:
            out = recalc.recalc(list(paths.values()), engine, folder_factory.mktemp(engine))
            done[engine] = dict(zip(paths, out, strict=True))
        return done[engine]

    return get


ATBASH = str.maketrans(string.ascii_lowercase + string.ascii_uppercase,
                       string.ascii_lowercase[::-1] + string.ascii_uppercase[::-1])


def transposed(text: str) -> str:
    """A square matrix written row-major, one character per entry, transposed."""
    n = int(round(len(text) ** 0.5))
    return "".join(np.array(list(text)).reshape(n, n).T.ravel())


# What each hand-built template computes, from the full-length text it reads.
ANSWERS = {
    "reverse": lambda text: text[::-1],
    "atbash": lambda text: text.translate(ATBASH),
    "transpose": transposed,
}


def failures(checks) -> list[str]:
    """The failed block checks, each with its problems, for an assertion message."""
    return [f"{c.block}: {'; '.join(c.problems)}" for c in checks if not c.ok]
