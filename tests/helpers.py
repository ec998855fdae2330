"""Shared test helpers: engines that must be present under CI, and workbook cases."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import string
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pytest

from xlformer import builder, catalog, recalc, writer
from xlformer.reader import read_built
from xlformer.recalc import available
from xlformer.spec import load_spec
from xlformer.weights import make_weights


def require_engine(engine: str) -> None:
    """Skip when `engine` is absent, except under CI where it must be installed."""
    if not available(engine):
        _absent(f"{engine} is not installed "
                "(apt-get install -y libreoffice-calc-nogui gnumeric)")


def require_renderer() -> None:
    """LibreOffice, pdftoppm and pdftotext, under the same rule as the engines."""
    require_engine("libreoffice")
    if not shutil.which("pdftoppm") or not shutil.which("pdftotext"):
        _absent("pdftoppm or pdftotext is not installed (apt-get install -y poppler-utils)")


def require_lxml() -> None:
    """lxml (in the test extra), under the same rule: openpyxl serialises with it when
    it is installed, and many users have it."""
    if importlib.util.find_spec("lxml") is None:
        _absent("lxml is not installed (pip install -e '.[test]')")


def require_tokenizers() -> None:
    """Hugging Face's tokenizers (in the test extra, for BPE text), under the same rule."""
    if importlib.util.find_spec("tokenizers") is None:
        _absent("tokenizers is not installed (pip install -e '.[test]')")


def _absent(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


_WORD = re.compile(r"<word [^>]*>(.*?)</word>")


def pdf_words(pdf: Path) -> list[list[str]]:
    """The words drawn on each page of a PDF, as poppler's pdftotext reads them."""
    out = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True,
                         text=True, check=True).stdout
    return [[html.unescape(w) for w in _WORD.findall(page)]
            for page in out.split("<page ")[1:]]


def build_template(name: str, path: Path, text: str | None = None) -> Path:
    spec = load_spec(catalog.resolve(name))
    book = builder.build(spec, make_weights(spec), spec.input if text is None else text)
    writer.save(book, path)
    return path


class Workbooks(Mapping):
    """key -> workbook path, each built on first use by `make(key)`.

    `wanted` are the keys the tests this run selected ask for (see `selected`):
    `lazy_recalc` recomputes all of them in one engine run, so `-k` on one case builds
    and recomputes that case alone."""

    def __init__(self, keys: Iterable, make: Callable[[Any], Path], wanted: Iterable = ()):
        self._keys, self._make, self._paths = list(keys), make, {}
        self.wanted = [k for k in self._keys if k in set(wanted)]

    def __getitem__(self, key) -> Path:
        if key not in self._paths:
            if key not in self._keys:
                raise KeyError(key)
            self._paths[key] = self._make(key)
        return self._paths[key]

    def __iter__(self) -> Iterator:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def selected(request, argname: str) -> set:
    """The values of parameter `argname` in the tests of the requesting module that this
    run will execute (after -k, -m and deselection)."""
    module = request.module.__name__
    return {item.callspec.params[argname] for item in request.session.items
            if item.module.__name__ == module and hasattr(item, "callspec")
            and argname in item.callspec.params}


def type_into(path: Path, name: str, value) -> None:
    """What a user does: type into a named cell (input_text, chart.position, ...) and
    save, without xlformer."""
    wb = openpyxl.load_workbook(path)
    area = read_built(path).names[name]
    wb[area.sheet].cell(area.row, area.col).value = value
    wb.save(path)


def lazy_recalc(paths: Mapping, folder_factory):
    """engine -> {key: recomputed path}, computed on first look-up: the key and every
    other key the run wants (`Workbooks.wanted`; all keys of a plain dict) in one engine
    run. A key asked for later is recomputed in a run of its own."""
    done: dict[str, dict] = {}

    class Recomputed(Mapping):
        def __init__(self, engine: str):
            self.engine, self.paths = engine, done.setdefault(engine, {})

        def __getitem__(self, key) -> Path:
            if key not in self.paths:
                batch = [k for k in getattr(paths, "wanted", list(paths))
                         if k not in self.paths and k != key] + [key]
                out = recalc.recalc([paths[k] for k in batch], self.engine,
                                    folder_factory.mktemp(self.engine))
                self.paths.update(zip(batch, out, strict=True))
            return self.paths[key]

        def __iter__(self) -> Iterator:
            return iter(paths)

        def __len__(self) -> int:
            return len(paths)

    def get(engine: str) -> Recomputed:
        require_engine(engine)
        return Recomputed(engine)

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


def error_cells(values) -> list[str]:
    """Every cell of every sheet of a recomputed workbook (openpyxl, data_only) that
    holds an error value, as Sheet!A1=value."""
    return [f"{ws.title}!{c.coordinate}={c.value!r}" for ws in values.worksheets
            for row in ws.iter_rows() for c in row if recalc.error_value(c.value)]


def shortest_decimals(value: np.ndarray) -> np.ndarray:
    """Each float32 or float16 as the double nearest to the shortest decimal NumPy prints
    for it (which reads back as the same float32 or float16): the numbers a sheet holds
    for weights of that precision."""
    flat = [float(str(x)) + 0.0 for x in np.asarray(value).ravel()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(value))


def significant_digits(text: str) -> int:
    """The significant digits of a number as a cell's XML writes it ("0.00125" has 3)."""
    mantissa = text.lower().partition("e")[0].replace(".", "").lstrip("+-0")
    return len(mantissa.rstrip("0")) or 1


def failures(checks) -> list[str]:
    """The failed block checks, each with its problems, for an assertion message."""
    return [f"{c.block}: {'; '.join(c.problems)}" for c in checks if not c.ok]
