"""`xlformer render`: a file or range that cannot be drawn says what is wrong in one line;
a block drawn by its defined name shows its title and labels and nothing else; an A1
range draws those cells; the default picture fits a projector."""

from __future__ import annotations

import re
import struct
import subprocess
import zipfile

import pytest
from click.testing import CliRunner
from helpers import build_template, require_renderer

from xlformer import recalc, render
from xlformer.cli import main

WEIGHTS = "h.0.attn.head0.weights"
WEIGHTS_TITLE = "weights = softmax(scores) (head 0)"
CHART_TITLE = "Output probabilities"  # the chart's title, wrapped in a narrow picture


@pytest.fixture(scope="module")
def atbash(tmp_path_factory):
    return build_template("atbash", tmp_path_factory.mktemp("render") / "atbash.xlsx")


def _render(*args):
    return CliRunner().invoke(main, ["render", *map(str, args)])


def _one_error(result, *words) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _not_a_workbook(tmp_path, case):
    """A file (or folder) given as the workbook, and the words that must say why."""
    path = tmp_path / {"missing": "missing.xlsx", "folder": "folder.xlsx", "text": "notes.txt",
                       "text named .xlsx": "notes.xlsx", "empty": "empty.xlsx",
                       "zip": "archive.xlsx", "named .zip": "book.zip"}[case]
    if case == "folder":
        path.mkdir()
    elif case.startswith("text"):
        path.write_text("a teacher's notes\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not a workbook")
    elif case == "named .zip":
        build_template("reverse", tmp_path / "reverse.xlsx").rename(path)
    return path, {"missing": "does not exist", "folder": "is a folder",
                  "text": "not a zip archive", "text named .xlsx": "not a zip archive",
                  "empty": "not a zip archive",
                  "zip": "is a zip archive but not an .xlsx workbook",
                  "named .zip": "must end in .xlsx"}[case]


@pytest.mark.parametrize("case", ["missing", "folder", "text", "text named .xlsx", "empty",
                                  "zip", "named .zip"])
def test_a_file_that_is_not_a_workbook_says_what_it_is(tmp_path, case):
    path, words = _not_a_workbook(tmp_path, case)
    out = tmp_path / "picture.png"
    _one_error(_render(path, "-o", out), str(path), words)
    assert not out.exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--sheet", "Nope"], ["has no sheet 'Nope'", "Layer0"]),
    (["--range", "h.0.attn.head0.weight"], ["no defined name 'h.0.attn.head0.weight'",
                                            f"did you mean '{WEIGHTS}'"]),
    (["--range", "Layer0!A1:"], ["'Layer0!A1:'", "is not a cell or range"]),
    (["--range", "Layer0!B2:XFE9"], ["leaves the sheet"]),
    (["--range", "Layer0!A0:B2"], ["leaves the sheet"]),
    (["--range", "Nope!A1:B2"], ["has no sheet 'Nope'"]),
    (["--range", WEIGHTS, "--sheet", "Input"], ["is on sheet 'Layer0'", "not --sheet Input"]),
])
def test_a_bad_sheet_or_range_is_one_line(tmp_path, atbash, args, words):
    out = tmp_path / "picture.png"
    _one_error(_render(atbash, *args, "-o", out), *words)
    assert not out.exists()


def _page_text(pdf, page) -> str:
    return subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), "-layout", str(pdf),
                           "-"], capture_output=True, text=True, check=True).stdout


def _page_points(pdf, page) -> tuple[float, float]:
    info = subprocess.run(["pdfinfo", "-f", str(page), "-l", str(page), str(pdf)],
                          capture_output=True, text=True, check=True).stdout
    line = next(x for x in info.splitlines() if x.startswith("Page") and " size:" in x)
    width, _, height = line.split("size:")[1].split()[:3]
    return float(width), float(height)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_a_block_by_its_name_shows_its_title_and_labels_and_nothing_else(tmp_path, atbash):
    require_renderer()
    # LibreOffice saves no row that is empty (the gap rows between bands), which the
    # picture of a block must leave out as well
    saved = recalc.recalc([atbash], "libreoffice", tmp_path / "saved")[0]
    jobs = [(atbash, render.find_cells(atbash, WEIGHTS)),
            (atbash, "Layer0"),
            (atbash, render.find_cells(atbash, "Output!A1:H20")),
            (atbash, render.find_cells(atbash, "Output!A47:H72")),
            (saved, render.find_cells(saved, WEIGHTS))]
    (block, block_page), (layer, layer_page), (top, top_page), (chart, chart_page), \
        (resaved, resaved_page) = render.export_pdf(jobs, tmp_path)

    text = _page_text(block, block_page)
    # its title, the key positions' labels (position, then the input's character),
    # and the rows' position labels from column A
    assert WEIGHTS_TITLE in text
    assert re.search(r"0 ?w +1 ?i +2 ?z", text) and "pos 0" in text and "pos 7" in text
    # blocks of the same band to its left, and the bands above and below, are hidden
    for elsewhere in ("scores = Q", "m = max_j", "[Q | K | V]", "out = weights · V", "mlp"):
        assert elsewhere not in text, elsewhere
    assert WEIGHTS_TITLE in _page_text(layer, layer_page)
    # a title row, a column-label row and 8 positions, at the sheet's 15 pt row height
    width, height = _page_points(block, block_page)
    whole_width, whole_height = _page_points(layer, layer_page)
    assert abs(height - 10 * 15) < 2, height
    assert abs(_page_points(resaved, resaved_page)[1] - 10 * 15) < 2
    assert WEIGHTS_TITLE in _page_text(resaved, resaved_page)
    assert width < whole_width / 5 and height < whole_height / 3

    image = tmp_path / "block"
    subprocess.run(["pdftoppm", "-r", "50", "-f", str(block_page), "-l", str(block_page),
                    "-singlefile", str(block), str(image)], check=True)
    pixels = render.read_ppm(image.with_suffix(".ppm")).astype(float)
    dark = (pixels.mean(axis=2) < 128).mean()
    assert pixels.std() > 10 and 0.001 < dark < 0.5, "the block's picture looks blank"

    # an A1 range is drawn as it is: the output and the logits, not the rows below, and
    # not the chart, whose anchor is below the range; a range around the anchor has it
    text = _page_text(top, top_page)
    assert "output text" in text and "logits = x · W_head + b" in text
    assert "probs = softmax" not in text and CHART_TITLE not in text
    assert CHART_TITLE in _page_text(chart, chart_page)


@pytest.mark.slow
def test_a_range_picture_is_small_and_the_default_picture_fits_a_projector(tmp_path, atbash):
    require_renderer()
    out = tmp_path / "weights.png"
    result = _render(atbash, "--range", WEIGHTS, "-o", out)
    assert result.exit_code == 0, result.output
    width, height = _png_size(out)
    # 10 rows of 15 pt at the default's 100 dpi; two label columns and 8 key positions
    assert abs(height - 10 * 15 * 100 / 72) <= 3 and 300 < width < 1200, (width, height)

    out = tmp_path / "output.png"
    result = _render(atbash, "--sheet", "Output", "-o", out)
    assert result.exit_code == 0, result.output
    width, height = _png_size(out)
    assert width <= render.FIT_WIDTH and height > 300, (width, height)
    # the Output sheet is 95 logits wide: too wide for a projector even at the lowest
    # resolution, so the picture is its left part, and the command says so
    assert "note:" in result.output and "left" in result.output, result.output
