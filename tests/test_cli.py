"""The command line as a user meets it: messages, exit codes, files written or not; verify
after a user typed into the workbook and saved it in a spreadsheet engine."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from click.testing import CliRunner
from helpers import ANSWERS, build_template, require_engine, type_into
from openpyxl.workbook.defined_name import DefinedName

from xlformer import a1, catalog, recalc, reference, writer
from xlformer.cli import main
from xlformer.layout import Area
from xlformer.reader import Built, read_built
from xlformer.spec import load_spec
from xlformer.verify import _compare_block, relative_error
from xlformer.weights import make_weights

WORDS = Path(__file__).parent / "specs" / "words.toml"  # reads token ids
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def invoke(*args):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_build_without_arguments_builds_the_reversal_demo(run, tmp_path):
    result = run("build")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote reverse.xlsx: ")
    built = read_built(tmp_path / "reverse.xlsx")
    assert (built.spec.name, built.text) == ("reverse", "python")


def test_build_with_text_output_and_weights(run, tmp_path):
    assert run("export-weights", "tiny-gpt", "--seed", "3", "-o", "w.npz").exit_code == 0
    result = run("build", "tiny-gpt", "--text", "abc", "-o", "g.xlsx", "--weights", "w.npz")
    assert result.exit_code == 0, result.output
    built = read_built(tmp_path / "g.xlsx")
    assert built.text == "abc"
    assert np.array_equal(built.params["wte"], np.load("w.npz")["wte"])


def test_the_readme_build_leaves_the_repository_clean():
    """The README's first command, in a fresh clone, writes reverse.xlsx in its root:
    git ignores it, and still tracks workbooks/."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "reverse.xlsx",
                              "workbooks/reverse.xlsx", "docs/reverse.xlsx"], cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert ignored == ["reverse.xlsx"]


@pytest.mark.parametrize("width", [78, 50])  # 78: the help's width in 80 columns
def test_help_lists_every_command_with_a_whole_sentence(width):
    """Click cuts a command's help to fit the terminal and ends it with '...'."""
    result = CliRunner().invoke(main, ["--help"], terminal_width=width)
    listed = result.output.split("Commands:\n")[1]
    assert "..." not in listed
    shown: dict[str, str] = {}
    for line in listed.splitlines():
        if line[2] != " ":  # "  name  text", else a continuation of the text
            name, text = line.split(maxsplit=1)
            shown[name] = text
        else:
            shown[name] += " " + line.strip()
    assert sorted(shown) == sorted(main.commands)
    for name, text in shown.items():
        first = " ".join(main.commands[name].help.split("\n\n")[0].split())
        assert text.endswith(".") and first.startswith(text), (name, text)
    assert shown["render"] == "Draw a recomputed sheet to a PNG (LibreOffice and pdftoppm)."


def test_templates_lists_every_template_with_its_description(run):
    lines = run("templates").output.splitlines()
    assert [line.split()[0] for line in lines] == catalog.names()
    assert all(len(line.split()) > 3 for line in lines)


@pytest.mark.parametrize(("args", "message"), [
    (["build", "nope"], "Error: 'nope' is neither a spec file nor a template; templates: "),
    (["build", "revers"], "Error: 'revers' is neither a spec file nor a template (did you "
                          "mean 'reverse'?); templates: alphabet, "),
    (["build", "missing.toml"], "Error: spec file missing.toml does not exist"),
    (["build", "--text", "toolong!"], "Error: input text has 8 characters, more than max_seq (6)"),
    (["build", "--text", "caf\u00e9"], "Error: input text has characters outside the vocabulary:"
                                       " '\u00e9' at 3"),
    (["build", "-o", "no/such/dir/x.xlsx"], "Error: output folder no/such/dir does not exist"),
    (["build", "-o", "x.txt"], "Error: output x.txt must end in .xlsx"),
    (["build", "--weights", "none.npz"], "Error: weights file none.npz does not exist"),
    (["verify", "none.xlsx"], "Error: none.xlsx does not exist"),
    (["verify", "plain.xlsx"], "Error: plain.xlsx is not a workbook built by xlformer"),
    (["verify", "broken.xlsx"], "Error: broken.xlsx is not an .xlsx workbook: it is not a zip "
                                "archive, which every .xlsx file is"),
    (["verify", "notes.txt"], "Error: notes.txt is not a workbook (.xlsx), a spec (.toml) or a "
                              "template name"),
    (["verify", "missing.txt"], "Error: missing.txt does not exist"),
    (["verify", "folder.xlsx"], "Error: folder.xlsx is a folder, not an .xlsx workbook"),
    (["verify", "nope"], "Error: 'nope' is neither a spec file nor a template"),
    (["build", "bad.toml"], "Error: bad.toml is not valid TOML: "),
    (["build", "latin1.toml"], "Error: spec latin1.toml is not UTF-8 text (byte 11: b'\\xe9')"),
    (["build", "typo.toml"], "Error: unknown key 'model.n_heads' (did you mean 'model.n_head'?)"),
    (["build", "--text", "ab\x07"], "Error: input text has characters outside the vocabulary:"
                                     " '\\x07' at 2"),
    (["build", "--weights", "text.npz"], "Error: weights file text.npz is not a valid weights "
                                         "archive (.npz): it is not a zip archive of arrays"),
    (["build", "--weights", "array.npy"], "Error: weights file array.npy is not a valid weights "
                                          "archive (.npz): it is a single array (.npy)"),
    (["build", "--weights", "renamed.npz"], "Error: weights file renamed.npz is not a valid "
                                            "weights archive (.npz): it is a single array"),
    (["build", "--weights", "cut.npz"], "Error: weights file cut.npz is not a valid weights "
                                        "archive (.npz): the zip archive is damaged"),
    (["build", "--weights", "objects.npz"], "Error: weights file objects.npz is not a valid "
                                            "weights archive (.npz): array 'wte' holds Python "
                                            "objects, not numbers"),
    (["verify", "reverse", "--weights", "renamed.npz"], "Error: weights file renamed.npz is not "
                                                        "a valid weights archive (.npz)"),
    (["build", "--weights", "nan.npz"], "Error: nan.npz: array 'wte' holds NaN or infinite"),
    (["build", "--weights", "inf.npz"], "Error: inf.npz: array 'lm_head.bias' holds NaN or inf"),
    (["build", "--weights", "shape.npz"], "Error: shape.npz: array 'wte' has shape (95, 3), "
                                          "the spec needs (95, 4)"),
    (["build", "--weights", "lacks.npz"], "Error: lacks.npz lacks array 'wte' of shape (95, 4)"),
])
def test_user_mistakes_give_one_line_and_exit_code_2(run, tmp_path, args, message):
    openpyxl.Workbook().save(tmp_path / "plain.xlsx")
    (tmp_path / "broken.xlsx").write_text("not a zip")
    _bad_inputs(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.strip() == message or result.output.startswith(message)
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(tmp_path.iterdir()) == before  # nothing written, not even a temporary


def _bad_inputs(folder: Path) -> None:
    source = catalog.resolve("reverse").read_text()
    (folder / "bad.toml").write_text(source.replace("[model]", "[model"))
    (folder / "typo.toml").write_text(source.replace("n_head =", "n_heads ="))
    (folder / "text.npz").write_text("not an npz")
    (folder / "notes.txt").write_text("my notes")
    (folder / "folder.xlsx").mkdir()
    (folder / "latin1.toml").write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    good = make_weights(load_spec(catalog.resolve("reverse")))
    for name, change in [("nan", {"wte": good["wte"] * np.nan}),
                         ("inf", {"lm_head.bias": good["lm_head.bias"] + np.inf}),
                         ("shape", {"wte": good["wte"][:, :3]})]:
        np.savez(folder / f"{name}.npz", **{**good, **change})
    np.savez(folder / "lacks.npz", **{k: v for k, v in good.items() if k != "wte"})
    np.save(folder / "array.npy", good["wte"])
    (folder / "renamed.npz").write_bytes((folder / "array.npy").read_bytes())
    whole = (folder / "lacks.npz").read_bytes()
    (folder / "cut.npz").write_bytes(whole[:len(whole) // 2])
    np.savez(folder / "objects.npz", **{**good, "wte": good["wte"].astype(object)})


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys")
def test_an_unwritable_folder_is_named(run, tmp_path):
    """/sys refuses new files even to root, who can write anywhere else."""
    result = run("build", "-o", "/sys/reverse.xlsx")
    assert (result.exit_code, result.output) == (
        2, "Error: cannot write /sys/reverse.xlsx: Permission denied\n")


def test_a_full_disk_keeps_the_old_workbook(run, tmp_path, monkeypatch):
    assert run("build").exit_code == 0
    before = (tmp_path / "reverse.xlsx").read_bytes()

    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.os, "fsync", full)
    result = run("build", "--text", "abc")
    assert (result.exit_code, result.output) == (
        2, "Error: cannot write reverse.xlsx: No space left on device\n")
    assert (tmp_path / "reverse.xlsx").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["reverse.xlsx"]


def test_a_failed_build_leaves_the_previous_workbook_untouched(run, tmp_path):
    assert run("build").exit_code == 0
    before = (tmp_path / "reverse.xlsx").read_bytes()
    assert run("build", "--text", "much too long").exit_code == 2
    assert (tmp_path / "reverse.xlsx").read_bytes() == before


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "w.xlsx"
    target.write_bytes(b"previous")

    def crash(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        writer.atomic_write(target, b"new")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["w.xlsx"]


@pytest.mark.slow
def test_verify_passes_a_fresh_build(run):
    require_engine("gnumeric")
    result = run("verify", "vanilla-encoder", "--engine", "gnumeric")
    assert result.exit_code == 0, result.output
    assert "gnumeric     probs " in result.output
    assert result.output.rstrip().endswith("0 failed")


@pytest.mark.parametrize("engine", ["libreoffice", "gnumeric"])
def test_verify_fails_a_tampered_workbook(run, tmp_path, engine):
    """One wrong formula among thousands is found and named."""
    require_engine(engine)
    assert run("build", "-o", "r.xlsx").exit_code == 0
    area = read_built(Path("r.xlsx")).names["h.0.attn.head0.weights"]
    wb = openpyxl.load_workbook("r.xlsx")
    wb[area.sheet].cell(area.row + 2, area.col + 1).value = "=0.5"
    wb.save("r.xlsx")
    result = run("verify", "r.xlsx", "--engine", engine)
    assert result.exit_code == 1
    assert "h.0.attn.head0.weights" in result.output and "FAIL" in result.output
    assert "Layer0!" in result.output
    cell = f"{area.sheet}!{openpyxl.utils.get_column_letter(area.col + 1)}{area.row + 2}"
    assert f"    {cell}: got 0.5, want " in result.output  # plain numbers, not np.float64(0.5)
    assert "np." not in result.output


@pytest.mark.parametrize("saver", recalc.ENGINES)
def test_a_workbook_typed_into_and_saved_by_an_engine_verifies(run, tmp_path, saver):
    """Build, type a new word, open and save in the engine (LibreOffice's save loses the
    comments' author, which Gnumeric then saves as no author at all), verify in both."""
    require_engine(saver)
    assert run("build", "-o", "r.xlsx").exit_code == 0
    type_into(tmp_path / "r.xlsx", "input_text", "Stream")
    [saved] = recalc.recalc([tmp_path / "r.xlsx"], saver, tmp_path / saver)
    result = run("verify", str(saved))
    assert result.exit_code == 0, result.output
    want = json.dumps(ANSWERS["reverse"]("Stream"))  # "maertS"
    assert result.output.splitlines()[:3] == [
        'input: "Stream"', f"libreoffice output_text: {want}", f"gnumeric output_text: {want}"]
    assert result.output.rstrip().endswith(" 0 failed")


def test_verify_shows_the_ids_it_read(run):
    require_engine("gnumeric")
    spec = load_spec(WORDS)
    ids = reference.forward(spec, make_weights(spec), (5, 2, 1))["output.ids"]
    want = reference.decode(spec.out_vocab, ids)
    assert " " in want  # spaces must show: the tokens " " and " cat"
    result = run("verify", str(WORDS), "--ids", "5 2 1", "--engine", "gnumeric")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "input ids: 5, 2, 1", f"gnumeric output_text: {json.dumps(want)}"]


def test_a_lost_defined_name_is_named(run, tmp_path):
    assert run("build", "-o", "r.xlsx").exit_code == 0
    wb = openpyxl.load_workbook("r.xlsx")
    del wb.defined_names["wte"]
    wb.save("r.xlsx")
    result = run("verify", "r.xlsx")
    assert (result.exit_code, result.output) == (
        2, "Error: r.xlsx lacks the defined name 'wte', which locates a block of the model; "
           "build the workbook again\n")


def test_names_a_user_adds_locate_no_block(tmp_path):
    path = build_template("reverse", tmp_path / "r.xlsx")
    wb = openpyxl.load_workbook(path)
    wb.defined_names.add(DefinedName("rate", attr_text="0.5"))
    wb.defined_names.add(DefinedName("two", attr_text="Input!$A$1,Input!$C$3"))
    wb.save(path)
    built = read_built(path)
    assert built.text == "python" and not {"rate", "two"} & set(built.names)


@pytest.mark.parametrize("typed", [0, 62951413])
def test_digits_typed_as_a_number_read_as_their_digits(tmp_path, typed):
    """A spreadsheet stores digits typed into a cell as a number; the sheet reads them as
    text (MID), and so must the reference."""
    path = build_template("sort", tmp_path / "sort.xlsx")
    type_into(path, "input_text", typed)
    assert read_built(path).text == str(typed)


def test_a_reference_of_exact_zeros_fails_naming_the_cell():
    """A wrong cell where the reference is 0 is named; the relative error leaves it out
    (it once divided by the smallest float: an overflow from an error of 4 up)."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "S"
    for row in ([0.0, 1e-3, 0.0], [0.0, 0.0, -7.0]):
        ws.append(row)
    built = Built(None, {}, "", {"zeros": Area("S", 1, 1, 2, 3)}, {})
    zeros = np.zeros((2, 3))
    check = _compare_block("engine", "zeros", zeros, zeros, built, wb)
    assert [p.split(": got ")[0] for p in check.problems] == ["S!B1", "S!C2"]
    assert not check.ok and (check.max_abs, check.max_rel) == (7.0, 0.0)
    ws["B1"] = ws["C2"] = 0.0
    check = _compare_block("engine", "zeros", zeros, zeros, built, wb)
    assert check.ok and (check.max_abs, check.max_rel) == (0.0, 0.0)
    assert relative_error(np.array([5.0, 3.0]), np.array([0.0, -2.0])).tolist() == [0, 2.5]


def test_a_wrong_cell_where_the_reference_is_zero_is_named(run):
    engine = "gnumeric"
    require_engine(engine)
    assert run("build", "-o", "r.xlsx").exit_code == 0
    built = read_built(Path("r.xlsx"))
    assert reference.forward(built.spec, built.params, built.text)["pos_emb"][2, 0] == 0
    area = built.names["pos_emb"]
    wb = openpyxl.load_workbook("r.xlsx")
    wb[area.sheet].cell(area.row + 2, area.col).value = "=7"
    wb.save("r.xlsx")
    result = run("verify", "r.xlsx", "--engine", engine)
    assert result.exit_code == 1, result.output
    cell = f"{area.sheet}!{a1.cell(area.row + 2, area.col)}"
    assert any(line.startswith(f"    {cell}: got ") and "7" in line
               for line in result.output.splitlines())
    assert any(line.startswith(f"{engine:<12} pos_emb ") and line.endswith("FAIL")
               for line in result.output.splitlines())
