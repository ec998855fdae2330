"""Training: tasks, held-out inputs, determinism, and `xlformer train` as a user meets it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xlformer import catalog, train
from xlformer.cli import main
from xlformer.spec import SpecError, load_spec, parse_spec
from xlformer.weights import make_weights

pytestmark = pytest.mark.slow

SMALL = """
name = "small"
text = "ab"
[vocab]
tokens = [" ", "a", "b", "c", "d"]
[model]
max_seq = 4
d_model = 8
n_head = 2
n_layer = 1
d_ff = 16
causal = false
"""
TEXT = "the cat sat on the mat and the dog sat on the log " * 4


def small(extra: str = ""):
    return parse_spec(SMALL + extra)


def run(spec, task, steps=40, seed=0, text=None):
    *progress, params = train.train(spec, task, steps, seed, text)
    return progress, params


@pytest.mark.parametrize("task, text, want", [
    ("copy", "dab", "dab "), ("reverse", "dab", "bad "), ("sort", "dcab", "abcd"),
    ("sort", "bab", "abb "), ("reverse", "", "    "),
])
def test_answers_are_padded_to_every_position(task, text, want):
    assert train.answer(small(), task, text) == want


def test_a_task_with_nothing_to_hold_out_is_refused():
    spec = parse_spec(SMALL.replace('[" ", "a", "b", "c", "d"]', '[" ", "a"]')
                      .replace("max_seq = 4", "max_seq = 1").replace('text = "ab"', 'text = "a"'))
    with pytest.raises(train.TrainError, match="too few inputs to hold any out"):
        train.train(spec, "copy", 1, 0)


def test_an_encoder_decoder_is_refused():
    spec = load_spec(catalog.resolve("copy"))
    assert spec.model.encoder_decoder
    with pytest.raises(train.TrainError, match="models without an encoder"):
        train.train(spec, "copy", 1, 0)


def test_sort_follows_the_vocabulary_order():
    spec = parse_spec(SMALL.replace('[" ", "a", "b", "c", "d"]', '[" ", "d", "c", "b", "a"]'))
    assert train.answer(spec, "sort", "abd") == "dba "


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_held_out_inputs_are_never_trained_on(task):
    spec = small()
    held = set(train.held_out(spec, 100))
    assert len(held) == 100 and all(3 <= len(s) <= 4 for s in held)
    rng = np.random.default_rng(0)
    for ids, targets in islice(train.algorithmic_batches(spec, task, rng, 64, held), 20):
        for row, target in zip(ids, targets, strict=True):
            text = "".join(spec.vocab.tokens[i] for i in row).rstrip(" ")
            assert text not in held
            assert "".join(spec.vocab.tokens[i] for i in target) == train.answer(spec, task, text)


def test_language_model_windows_predict_the_next_character():
    spec = small()
    ids = train.lm_ids(parse_spec(SMALL.replace('"d"]', '"d", "e", "t", "h", "o", "g"]')),
                       "the\n dog  " * 10)
    assert len(ids) == 79  # "the dog the dog ...": whitespace runs are one space
    x, y = next(train.lm_batches(spec, np.arange(20), np.random.default_rng(0), 5))
    assert np.array_equal(x[:, 1:], y[:, :-1]) and np.array_equal(x + 1, y)


def test_training_is_deterministic_for_a_seed():
    spec = small()
    a, b, c = run(spec, "sort")[1], run(spec, "sort")[1], run(spec, "sort", seed=1)[1]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["wte"], c["wte"])


def test_training_lowers_the_loss_and_learns_to_copy():
    spec = small()
    progress, params = run(spec, "copy", steps=300)
    assert progress[-1].loss < progress[0].loss / 10
    assert train.evaluate(spec, params, "copy", held_out_size=100) == (1.0, 100)


def test_trained_weights_are_rounded_to_what_the_sheet_holds():
    params = run(small(), "reverse", steps=5)[1]
    for v in params.values():
        assert all(float(f"{x:.15g}") == x for x in v.ravel())


@pytest.mark.parametrize("norm, positions, causal", [
    ("post", "sinusoidal", True), ("none", "binary", False), ("pre", "none", True)])
def test_any_architecture_trains(norm, positions, causal):
    codes = "\nbinary_codes = [0, 1, 2, 3]" if positions == "binary" else ""
    spec = parse_spec(SMALL.replace("causal = false", f'causal = {str(causal).lower()}\n'
                                    f'norm = "{norm}"\npositions = "{positions}"{codes}'))
    progress, _ = run(spec, "lm", steps=60, text=TEXT.replace("t", "a").replace("h", "b")
                      .replace("e", "c").replace("s", "d").replace("o", "a").replace("n", "b")
                      .replace("g", "c").replace("l", "d").replace("m", "a"))
    assert progress[-1].loss < progress[0].loss


# --- [train] in a spec ----------------------------------------------------------------

def test_spec_train_table_is_read_and_resolved(tmp_path):
    spec = parse_spec(SMALL + '[train]\ntask = "lm"\nsteps = 7\ntext = "t.txt"\nlr = 1\n',
                      base=tmp_path)
    t = spec.train
    assert (t.task, t.steps, t.seed, t.batch, t.lr, t.text) == ("lm", 7, 0, 32, 1.0,
                                                                 tmp_path / "t.txt")


@pytest.mark.parametrize("table, message", [
    ('task = "add"', "train.task must be one of copy, reverse, sort, lm"),
    ('task = "lm"', "train.text (a text file) is needed for train.task = 'lm'"),
    ('task = "sort"\ntext = "x.txt"', "train.text (a text file) is needed"),
    ('task = "sort"\nsteps = 0', "train.steps must be positive"),
    ('task = "sort"\nlr = -1', "train.lr must be positive"),
    ('task = "sort"\nstep = 3', "unknown key 'train.step' (did you mean 'train.steps'?)"),
])
def test_spec_train_table_mistakes(table, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec(SMALL + "[train]\n" + table + "\n")


# --- the command --------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.toml").write_text(SMALL)
    return lambda *args: CliRunner().invoke(main, list(args))


def test_train_writes_weights_that_build(cli, tmp_path):
    result = cli("train", "small.toml", "--task", "sort", "--steps", "20", "-o", "w.npz")
    assert result.exit_code == 0, result.output
    assert "wrote w.npz: 20 steps in" in result.output
    assert "of 160 held-out inputs exactly right" in result.output  # half of 4^3 + 4^4
    spec = load_spec(tmp_path / "small.toml")
    trained = make_weights(spec, Path("w.npz"))
    assert trained.keys() == run(spec, "sort", 20)[1].keys()
    assert cli("build", "small.toml", "--weights", "w.npz", "-o", "s.xlsx").exit_code == 0


def test_train_uses_the_specs_train_table(cli, tmp_path):
    (tmp_path / "t.txt").write_text("abcd " * 20)
    (tmp_path / "lm.toml").write_text(SMALL + '[train]\ntask = "lm"\nsteps = 3\ntext = "t.txt"\n')
    result = cli("train", "lm.toml", "-o", "w.npz")
    assert result.exit_code == 0, result.output
    assert "3 steps" in result.output and "next characters of the held-out text" in result.output


@pytest.mark.parametrize("args, message", [
    (["--task", "lm"], "Error: task 'lm' needs a text file (--text FILE)"),
    (["--task", "sort", "--text", "t.txt"], "Error: --text is for --task lm, not sort"),
    (["--task", "lm", "--text", "missing.txt"], "Error: cannot read text file missing.txt"),
    (["--task", "lm", "--text", "bad.txt"],
     "Error: the text has 2 characters outside the vocabulary: 'x', 'y'"),
    (["--task", "lm", "--text", "short.txt"],
     "Error: the text has 3 characters; max_seq 4 needs at least 60"),
    ([], "Error: give --task (the spec has no train.task)"),
    (["--task", "copy", "-o", "w.xlsx"], "Error: output w.xlsx must end in .npz"),
    (["--task", "copy", "-o", "nowhere/w.npz"], "Error: output folder nowhere does not exist"),
])
def test_train_mistakes_are_one_line_and_write_nothing(cli, tmp_path, args, message):
    (tmp_path / "t.txt").write_text("abcd " * 20)
    (tmp_path / "bad.txt").write_text("abxy " * 20)
    (tmp_path / "short.txt").write_text("abc")
    if "-o" not in args:
        args = [*args, "-o", "w.npz"]
    result = cli("train", "small.toml", *args)
    assert result.exit_code == 2
    assert message in result.output and result.output.count("Error:") == 1
    assert not (tmp_path / "w.npz").exists()


def test_ctrl_c_stops_training_and_writes_nothing(cli, tmp_path, monkeypatch):
    real = train._run

    def interrupted(*args):
        steps = real(*args)
        yield next(steps)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_run", interrupted)
    result = cli("train", "small.toml", "--task", "copy", "--steps", "50", "-o", "w.npz")
    assert result.exit_code == 130
    assert "interrupted: nothing written to w.npz" in result.output
    assert list(tmp_path.glob("*.npz")) == [] and list(tmp_path.glob(".*")) == []


@pytest.mark.parametrize("name", [n for n in catalog.names()
                                  if load_spec(catalog.resolve(n)).train is not None])
def test_trained_templates_do_their_task_on_every_held_out_input(name):
    """By the reference, i.e. what the workbook computes; the language model's
    predictions are checked against the reference in the engine tests."""
    spec = load_spec(catalog.resolve(name))
    assert spec.weights.source == "npz" and spec.weights.file.is_file()
    if spec.train.task != "lm":
        assert train.evaluate(spec, make_weights(spec), spec.train.task)[0] == 1.0


def test_sigint_stops_a_real_run_and_writes_nothing(tmp_path):
    """What a user's Ctrl-C sends, to the real command in its own process."""
    (tmp_path / "small.toml").write_text(SMALL)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from xlformer.cli import main; main()", "train", "small.toml",
         "--task", "copy", "--steps", "1000000", "-o", "w.npz"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()  # the progress bar's label: training has started
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: nothing written to w.npz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.toml"]
