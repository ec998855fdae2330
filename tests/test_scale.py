"""Big workbooks: the streaming writer at medium size in both engines, what a build
leaves out at scale, progress, and a clean interrupt."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import failures, require_engine

from xlformer import builder, writer
from xlformer.book import FORMULA, NUMBER, Book, Cell, Fill
from xlformer.cli import main
from xlformer.layout import Area
from xlformer.progress import BuildProgress
from xlformer.reader import read_built
from xlformer.spec import load_spec
from xlformer.verify import verify
from xlformer.weights import make_weights

pytestmark = pytest.mark.slow

MEDIUM = Path(__file__).parent / "specs" / "medium.toml"


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    spec = load_spec(MEDIUM)
    book = builder.build(spec, make_weights(spec), spec.text)
    path = tmp_path_factory.mktemp("medium") / "medium.xlsx"
    writer.save(book, path)
    return spec, book, path, read_built(path)  # read once: 1.2 M cells take half a minute


@pytest.mark.parametrize("engine", ["libreoffice", "gnumeric"])
def test_a_medium_model_streamed_matches_the_reference(medium, engine):
    _, book, path, built = medium
    require_engine(engine)
    checks = verify(path, (engine,), built)
    failed = failures(checks)
    assert not failed, failed[:3]
    checked = {c.block for c in checks}
    assert {"h.3.mlp.c_proj", "logits", "probs", "output_text"} <= checked
    assert len(checked) >= len(book.blocks) - 5  # heads' q/k/v/out windows included


def test_a_medium_model_leaves_out_the_pairwise_sheet_and_says_so(medium):
    _, book, _, _ = medium
    assert "Pairwise" not in book.sheets
    assert any("Pairwise sheet is left out" in n for n in book.notices)


def test_the_command_says_what_it_left_out(tmp_path):
    out = tmp_path / "m.xlsx"
    result = CliRunner().invoke(main, ["build", str(MEDIUM), "-o", str(out)])
    assert result.exit_code == 0, result.output
    # 4 layers x 4 heads x (129 x 129 for W_QK + 32 x 129 for X.W_QK + 32 x 32 scores)
    assert "note: the Pairwise sheet is left out: it would add 348,688 formula cells" \
        in result.output
    assert "wrote" in result.output and out.stat().st_size > 1_000_000


def test_blocks_are_kept_as_fills_not_cells(medium):
    """The plan holds no cell of a block: 1.2 M cells, a few thousand single ones."""
    _, book, _, _ = medium
    cells, formulas = book.counts()
    singles = sum(len(s.cells) for s in book.sheets.values())
    assert cells > 1_000_000 and formulas > 300_000 and singles < 10_000


def test_a_cell_written_twice_stops_the_writer():
    book = Book()
    sheet = book.sheet("S")
    sheet.put(2, 3, Cell(NUMBER, 1.0))
    book.fill(Fill("block", Area("S", 1, 2, 2, 2), FORMULA, lambda i: ["=1", "=2"]))
    with pytest.raises(ValueError, match="written twice"):
        writer.to_bytes(book)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_cells_and_the_block_after_a_delay(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 2.5, 3.0, 3.5])
    monkeypatch.setattr("xlformer.progress.time.monotonic", lambda: next(clock))
    screen = _Terminal()
    progress = BuildProgress(1000, "writing big.xlsx", screen)
    progress("Weights!wte", 100)  # at 0.5 s: nothing shown yet
    assert screen.getvalue() == ""
    progress("Layer0!h.0.attn.c_attn", 200)  # at 2.5 s: the bar appears
    progress("Output!logits", 300)
    progress.close()
    shown = screen.getvalue()
    assert "writing big.xlsx" in shown and "Output!logits" in shown and "600/1000" in shown


def test_progress_stays_quiet_off_a_terminal():
    screen = io.StringIO()
    progress = BuildProgress(10, "writing", screen)
    for _ in range(10):
        progress("Weights!wte", 1)
    progress.close()
    assert screen.getvalue() == ""


def test_an_interrupted_build_writes_nothing(tmp_path):
    """Ctrl-C while rows are being written: exit 130, no workbook, no temporary file."""
    out = tmp_path / "medium.xlsx"
    exe = Path(sys.executable).with_name("xlformer")
    proc = subprocess.Popen([str(exe), "build", str(MEDIUM), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".medium.xlsx.*.tmp")):  # writing has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: nothing written" in err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert list(tmp_path.iterdir()) == []
