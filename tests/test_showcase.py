"""The committed showcase workbooks: current with the code, and correct in both engines."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import require_engine

from xlformer import catalog, recalc
from xlformer.cli import main
from xlformer.reader import open_values, read_built
from xlformer.verify import compare

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SHOWCASE = sorted((ROOT / "workbooks").glob("*.xlsx"))


def test_there_is_one_showcase_workbook_per_template():
    assert sorted(p.stem for p in SHOWCASE) == sorted(catalog.names())  # "-" sorts before "."


def test_build_all_check_passes_on_the_committed_workbooks(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["build-all", "--check"])
    assert result.exit_code == 0, result.output


def test_build_all_check_says_what_it_checked_and_names_a_stale_workbook(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["build-all", "--dir", str(tmp_path)]).exit_code == 0
    current = runner.invoke(main, ["build-all", "--check", "--dir", str(tmp_path)])
    assert (current.exit_code, current.output) == (
        0, f"{len(SHOWCASE)} workbooks in {tmp_path}/ are current\n")
    (tmp_path / "tiny-gpt.xlsx").write_bytes((tmp_path / "reverse.xlsx").read_bytes())
    result = runner.invoke(main, ["build-all", "--check", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "tiny-gpt.xlsx" in result.output and "reverse.xlsx" not in result.output


@pytest.mark.parametrize("engine", recalc.ENGINES)
def test_every_showcase_workbook_verifies(engine, tmp_path):
    require_engine(engine)
    outputs = recalc.recalc(SHOWCASE, engine, tmp_path)
    for path, out in zip(SHOWCASE, outputs, strict=True):
        checks = compare(read_built(path), open_values(out), engine)
        failed = [f"{path.name} {c.block}: {c.problems}" for c in checks if not c.ok]
        assert not failed, "\n".join(failed)
