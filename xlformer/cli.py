"""The `xlformer` command: build, verify, list templates, rebuild the showcase."""

from __future__ import annotations

import io
import sys
import tempfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from . import bpe, builder, catalog, checkpoint, recalc, render, train, writer
from .book import Book
from .limits import LimitError
from .names import BadName
from .progress import BuildProgress
from .reader import Built, NotAWorkbook, read_built
from .spec import (
    Spec,
    SpecError,
    Train,
    Weights,
    check_ids,
    check_text,
    load_spec,
    parse_spec,
)
from .verify import BlockCheck, shown, verify
from .weights import WeightsError, check_params, make_weights

ENGINE_CHOICES = [*recalc.ENGINES, "all"]
SHOWCASE = Path("workbooks")


class UserError(click.ClickException):
    """A mistake in what the user gave: one line, exit code 2, nothing written."""

    exit_code = 2


def _load(spec_arg: str) -> Spec:
    try:
        return load_spec(catalog.resolve(spec_arg))
    except SpecError as e:
        raise UserError(str(e)) from None


def _weights(spec: Spec, file: Path | None):
    try:
        return make_weights(spec, file)
    except (SpecError, WeightsError) as e:
        raise UserError(str(e)) from None


def _output_path(out: Path) -> Path:
    folder = out.parent
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist")
    if out.is_dir():
        raise UserError(f"output {out} is a folder; give a file name ending in .xlsx")
    if out.suffix.lower() != ".xlsx":
        raise UserError(f"output {out} must end in .xlsx")
    return out


def parse_ids(ids: str) -> tuple[int, ...]:
    """Token ids typed on the command line: whole numbers separated by spaces or commas."""
    try:
        return tuple(int(i) for i in ids.replace(",", " ").split())
    except ValueError:
        raise UserError(f"--ids must be whole numbers separated by spaces, not {ids!r}") from None


def _input(spec: Spec, text: str | None, ids: str | None) -> str | tuple[int, ...]:
    """The input to build with: --text for a spec that reads text, --ids for one that
    reads token ids, else the spec's own."""
    if spec.reads_ids and text is not None:
        if spec.vocab.bpe is None:
            raise UserError(f"{spec.name} reads token ids (vocab.input = \"ids\"): give --ids, "
                            "not --text")
        if spec.vocab.merges is None:
            raise UserError(f"{spec.name}'s BPE vocabulary has no merges (vocab.merges) to "
                            "tokenize text with: give --ids, not --text")
        if ids is not None:
            raise UserError("give --text or --ids, not both")
        return _tokenized(spec.vocab.bpe, spec.vocab.merges, text, spec.model.max_seq)
    if not spec.reads_ids and ids is not None:
        raise UserError(f"{spec.name} reads text: give --text, not --ids")
    try:
        if spec.reads_ids:
            typed = spec.ids if ids is None else parse_ids(ids)
            check_ids(spec, typed)
            return typed
        typed = spec.text if text is None else text
        check_text(spec, typed)
        return typed
    except SpecError as e:
        raise UserError(str(e)) from None


def _plan(spec: Spec, weights_file: Path | None, text: str | None,
          ids: str | None = None) -> Book:
    """The whole workbook planned, limits checked; its cells are made when written."""
    text = _input(spec, text, ids)
    try:
        return builder.build(spec, _weights(spec, weights_file), text)
    except (LimitError, BadName) as e:
        raise UserError(str(e)) from None


def _build_bytes(spec: Spec, weights_file: Path | None, text: str | None,
                 ids: str | None = None) -> bytes:
    try:
        return writer.to_bytes(_plan(spec, weights_file, text, ids))
    except LimitError as e:
        raise UserError(str(e)) from None


class _Command(click.Command):
    def get_short_help_str(self, limit: int = 45) -> str:
        """The first sentence of the help whole: `xlformer --help` wraps a long one
        rather than cutting it short with '...'."""
        return super().get_short_help_str(limit=len(self.help or ""))


class _Group(click.Group):
    command_class = _Command


@click.group(cls=_Group)
@click.version_option(package_name="xlformer")
def main() -> None:
    """Compile a small transformer into a workbook of live spreadsheet formulas."""


@main.command()
@click.argument("spec", default=catalog.DEFAULT)
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Workbook to write (default: NAME.xlsx in the current folder).")
@click.option("--text", help="Input text the workbook opens with (default: the spec's).")
@click.option("--ids", help="For a spec that reads token ids: the ids the workbook opens "
              "with, e.g. \"3 1 4\" (default: the spec's).")
@click.option("--weights", "weights_file", type=click.Path(path_type=Path),
              help="An .npz of weights to use instead of the spec's own.")
def build(spec: str, output: Path | None, text: str | None, ids: str | None,
          weights_file: Path | None) -> None:
    """Build a workbook from a template name or a spec file."""
    model = _load(spec)
    out = _output_path(output or Path(f"{model.name}.xlsx"))
    start = time.perf_counter()
    book = _plan(model, weights_file, text, ids)
    cells, formulas = book.counts()
    progress = BuildProgress(cells, f"writing {out.name}")
    try:
        writer.save(book, out, progress)
    except LimitError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"\ninterrupted: nothing written to {out}", err=True)
        sys.exit(130)
    progress.close()
    for notice in book.notices:
        click.echo(f"note: {notice}", err=True)
    click.echo(f"wrote {out}: {cells:,} cells, {formulas:,} formulas, "
               f"{out.stat().st_size:,} bytes in {time.perf_counter() - start:.2f} s")


@main.command("verify")
@click.argument("target")
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="all", show_default=True,
              help="Spreadsheet engine(s) to recompute in.")
@click.option("--text", help="For a spec: the input text to build with.")
@click.option("--ids", help="For a spec that reads token ids: the ids to build with.")
@click.option("--weights", "weights_file", type=click.Path(path_type=Path),
              help="For a spec: an .npz of weights to use.")
def verify_cmd(target: str, engine: str, text: str | None, ids: str | None,
               weights_file: Path | None) -> None:
    """Recompute in real engines; compare with the reference.

    TARGET is a built workbook (.xlsx) or a spec to build first.
    """
    engines = recalc.ENGINES if engine == "all" else (engine,)
    path = Path(target)
    suffix = path.suffix.lower()
    if suffix not in ("", ".toml", ".xlsx"):  # reader.check_xlsx says what a .xlsx is not
        if not path.exists():
            raise UserError(f"{target} does not exist")
        if path.is_dir():
            raise UserError(f"{target} is a folder, not a workbook (.xlsx)")
        raise UserError(f"{target} is not a workbook (.xlsx), a spec (.toml) or a "
                        "template name")
    with tempfile.TemporaryDirectory(prefix="xlformer-") as tmp:
        if suffix != ".xlsx":
            model = _load(target)
            path = Path(tmp) / f"{model.name}.xlsx"
            path.write_bytes(_build_bytes(model, weights_file, text, ids))
        try:
            built = read_built(path)
            checks = verify(path, engines, built)
        except (recalc.EngineMissing, SpecError, NotAWorkbook) as e:
            raise UserError(str(e)) from None
        except recalc.EngineError as e:  # the engine broke, not the user: exit 1
            raise click.ClickException(str(e)) from None
    _report(checks, built)
    if not all(c.ok for c in checks):
        sys.exit(1)


def _report(checks: list[BlockCheck], built: Built) -> None:
    """What was checked (the input the workbook holds, each engine's output_text), then
    a row per block and engine."""
    if built.spec.reads_ids:
        typed = list(built.text)
        while typed and typed[-1] is None:  # the empty cells after the typed ids
            typed.pop()
        click.echo(f"input ids: {', '.join(shown(v) for v in typed)}")
    else:
        click.echo(f"input: {shown(built.text)}")
    if built.spec.generate is not None and built.spec.generate.target:
        click.echo(f"target: {shown(built.spec.generate.target)}")
    for c in checks:
        if c.block == "output_text":
            click.echo(f"{c.engine} output_text: {shown(c.shown)}")
    click.echo(f"{'engine':<12} {'block':<28} {'cells':>6} {'max abs err':>12} "
               f"{'max rel err':>12}  result")
    for c in checks:
        click.echo(f"{c.engine:<12} {c.block:<28} {c.cells:>6} {c.max_abs:>12.2e} "
                   f"{c.max_rel:>12.2e}  {'ok' if c.ok else 'FAIL'}")
        for problem in c.problems:
            click.echo(f"    {problem}")
    failed = sum(not c.ok for c in checks)
    click.echo(f"{len(checks) - failed} blocks ok, {failed} failed")


@main.command("render")
@click.argument("workbook", type=click.Path(path_type=Path))
@click.option("--sheet", help="Sheet to draw (default: the first, the guide).")
@click.option("--range", "cells",
              help="Draw only these cells: a block by its defined name "
                   "(h.0.attn.head0.weights), drawn with its title and labels, or a range "
                   "(Layer0!A1:H20, or A1:H20 on --sheet).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The .png to write.")
@click.option("--dpi", type=click.IntRange(30, 300),
              help=f"Resolution of the picture, which is then drawn whole. Default: fit "
                   f"a projector, the highest resolution up to {render.FIT_DPI[1]} dpi at "
                   f"which the picture is at most {render.FIT_WIDTH} pixels wide; a sheet "
                   f"wider than that at {render.FIT_DPI[0]} dpi is cut to its left "
                   f"{render.FIT_WIDTH} pixels.")
def render_cmd(workbook: Path, sheet: str | None, cells: str | None, output: Path,
               dpi: int | None) -> None:
    """Draw a recomputed sheet to a PNG (LibreOffice and pdftoppm)."""
    if output.suffix.lower() != ".png" or not output.parent.is_dir():
        raise UserError(f"output {output} must be a .png in an existing folder")
    try:
        what = sheet if cells is None else render.find_cells(workbook, cells, sheet)
        if sheet is not None and isinstance(what, render.Cells) and what.sheet != sheet:
            raise UserError(f"--range {cells} is on sheet {what.sheet!r}, not --sheet {sheet}")
        drawn = render.draw([(workbook, what, output)], dpi=dpi)[0]
    except (NotAWorkbook, recalc.EngineMissing, render.NoSuchSheet, render.BadRange) as e:
        raise UserError(str(e)) from None
    except recalc.EngineError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {output}: {drawn.width} x {drawn.height} pixels at {drawn.dpi} dpi")
    if drawn.cut_from:
        part = "sheet" if cells is None else "range"
        click.echo(f"note: the {part} is {drawn.cut_from:,} pixels wide at {drawn.dpi} dpi; the "
                   f"picture shows its left {drawn.width:,} (--dpi N draws it whole"
                   f"{', --range one block' if cells is None else ''})")


@main.command("templates")
def list_templates() -> None:
    """List the bundled templates."""
    for name in catalog.names():
        click.echo(f"{name:<18} {catalog.describe(name)}")


@main.command("export-weights")
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The .npz file to write.")
@click.option("--seed", type=int, help="Write seeded random weights of the spec's shapes instead.")
@click.option("--std", type=float, default=0.02, show_default=True,
              help="Standard deviation of the random weights (with --seed).")
def export_weights(spec: str, output: Path, seed: int | None, std: float) -> None:
    """Write a spec's weights to an .npz that --weights reads."""
    model = _load(spec)
    if seed is not None:
        model = replace(model, weights=Weights("random", seed=seed, std=std))
    params = _weights(model, None)
    if not output.parent.is_dir():
        raise UserError(f"output folder {output.parent} does not exist")
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    writer.atomic_write(output, buffer.getvalue())
    click.echo(f"wrote {output}: {len(params)} arrays")


@main.command("train")
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The .npz of trained weights to write.")
@click.option("--task", type=click.Choice(train.TASKS),
              help="What to learn: copy, reverse or sort the input, or lm: the next "
                   "character of --text. Default: the spec's train.task.")
@click.option("--steps", type=click.IntRange(min=1), help="Adam steps (default 2000).")
@click.option("--seed", type=int, help="Seed of the initial weights and the examples (default 0).")
@click.option("--text", "text_file", type=click.Path(path_type=Path),
              help="For --task lm: a UTF-8 text file whose characters are in the vocabulary.")
@click.option("--batch", type=click.IntRange(min=1), help="Examples per step (default 32).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate (default 0.01).")
def train_cmd(spec: str, output: Path, task: str | None, steps: int | None, seed: int | None,
              text_file: Path | None, batch: int | None, lr: float | None) -> None:
    """Train a spec's weights with Adam; write them to an .npz.

    Options left out come from the spec's [train] table, then the defaults.
    Ctrl-C stops training and writes nothing.
    """
    model = _load(spec)
    if not output.parent.is_dir():
        raise UserError(f"output folder {output.parent} does not exist")
    if output.suffix.lower() != ".npz":
        raise UserError(f"output {output} must end in .npz")
    given = dict(task=task, steps=steps, seed=seed, batch=batch, lr=lr, text=text_file)
    recipe = replace(model.train or Train(""), **{k: v for k, v in given.items() if v is not None})
    if not recipe.task:
        raise UserError("give --task (the spec has no train.task)")
    text = _read_text(recipe.text) if recipe.task == "lm" and recipe.text else None
    if text_file is not None and recipe.task != "lm":
        raise UserError(f"--text is for --task lm, not {recipe.task}")
    start, params = time.perf_counter(), None
    try:
        run = train.train(model, recipe.task, recipe.steps, recipe.seed, text,
                          batch=recipe.batch, lr=recipe.lr)
    except train.TrainError as e:
        raise UserError(str(e)) from None
    try:
        with click.progressbar(length=recipe.steps, label=f"training {model.name} on "
                               f"{recipe.task}", item_show_func=lambda p: p and _progress(p)
                               ) as bar:
            for item in run:
                if isinstance(item, dict):
                    params = item
                else:
                    bar.update(1, item)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: nothing written to {output}", err=True)
        sys.exit(130)
    seconds = time.perf_counter() - start
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    writer.atomic_write(output, buffer.getvalue())
    accuracy, size = train.evaluate(model, params, recipe.task, text)
    what = ("next characters of the held-out text" if recipe.task == "lm"
            else "held-out inputs exactly")
    click.echo(f"wrote {output}: {recipe.steps} steps in {seconds:.1f} s; "
               f"{accuracy:.1%} of {size} {what} right")


def _progress(p: train.Progress) -> str:
    return f"step {p.step} loss {p.loss:.4f} accuracy {p.accuracy:.1%}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"text file {path} is not UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read text file {path}: {e.strerror}") from None


@main.command("import")
@click.argument("checkpoint_file", metavar="CHECKPOINT|DIR", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The spec to write (.toml); its weights go beside it, same name, .npz "
                   "(and a folder's tokenizer files, as NAME.vocab.json and NAME.merges.txt).")
@click.option("--heads", type=click.IntRange(min=1),
              help="Attention heads per layer (no shape tells): needed for a checkpoint "
                   "file; a folder's config.json gives them.")
@click.option("--vocab", "vocab_file", type=click.Path(path_type=Path),
              help="For a checkpoint file: JSON list of the tokens in id order (or token -> "
                   "id). Without it, or with tokens longer than a character, the workbook's "
                   "input is token ids.")
@click.option("--layout", type=click.Choice(checkpoint.LAYOUTS),
              help="conv1d: matrices (in, out), as GPT-2; linear: (out, in), as nn.Linear. "
                   "Default: read from c_attn's shape.")
@click.option("--max-seq", type=click.IntRange(min=1),
              help="Positions in the workbook (default: all of wpe's rows).")
@click.option("--text", help="Input text the workbook opens with (one-character tokens, or "
              "a folder's BPE tokenizer).")
@click.option("--ids", help="Token ids the workbook opens with, e.g. \"3 1 4\" (a model "
              "that reads ids).")
def import_cmd(checkpoint_file: Path, output: Path, heads: int | None, vocab_file: Path | None,
               layout: str | None, max_seq: int | None, text: str | None,
               ids: str | None) -> None:
    """Import a GPT-2-style checkpoint as a spec and weights.

    CHECKPOINT is an .npz or .safetensors file of GPT-2-named tensors; DIR is a Hugging
    Face GPT-2 folder (config.json, model.safetensors, vocab.json and merges.txt).
    """
    if output.suffix.lower() != ".toml":
        raise UserError(f"output {output} must end in .toml")
    if not output.parent.is_dir():
        raise UserError(f"output folder {output.parent} does not exist")
    weights_path = output.with_suffix(".npz")
    if not checkpoint_file.exists():
        raise UserError(f"checkpoint {checkpoint_file} does not exist")
    folder = None
    try:
        if checkpoint_file.is_dir():
            if vocab_file is not None:
                raise UserError("--vocab is for a checkpoint file; a folder's tokens are its "
                                "vocab.json")
            folder = checkpoint.read_folder(checkpoint_file)
            if heads is not None and heads != folder.config.n_head:
                raise UserError(f"--heads {heads} disagrees with config.json's n_head "
                                f"{folder.config.n_head}")
            config, vocab_file = folder.config, folder.vocab
        elif heads is None:
            raise UserError("give --heads: a checkpoint file does not say how many heads "
                            "its layers have (a Hugging Face folder's config.json does)")
        else:
            config = checkpoint.Config(heads)
        tensors = (checkpoint.read_tensors(checkpoint_file) if folder is None
                   else folder.tensors)
        model = checkpoint.convert(tensors, layout)
        if folder is not None:
            checkpoint.check_config(folder, model)
        tokens = (None if vocab_file is None
                  else checkpoint.read_vocab(vocab_file, model.vocab_size))
    except checkpoint.CheckpointError as e:
        raise UserError(str(e)) from None
    if model.d_model % config.n_head:
        raise UserError(f"d_model {model.d_model} is not a multiple of --heads {config.n_head}")
    max_seq = max_seq or model.n_ctx
    if max_seq > model.n_ctx:
        raise UserError(f"--max-seq {max_seq} is more than the checkpoint's {model.n_ctx} "
                        "positions")
    bpe_files = None
    if folder is not None and tokens is not None:  # a byte-level BPE: tokens as shown
        bpe_files = (f"{output.stem}.vocab.json",
                     f"{output.stem}.merges.txt" if folder.merges else None)
        tokens = [bpe.shown(tok) for tok in tokens]
    reads_ids = tokens is None or bpe_files is not None or any(len(tok) != 1 for tok in tokens)
    if reads_ids and text is not None and bpe_files is None:
        raise UserError("this model reads token ids (no vocabulary of single characters): "
                        "give --ids, not --text")
    if not reads_ids and ids is not None:
        raise UserError("this model reads text (its tokens are single characters): give "
                        "--text, not --ids")
    if bpe_files is not None and text is not None:
        if ids is not None:
            raise UserError("give --text or --ids, not both")
        if folder.merges is None:
            raise UserError(f"{checkpoint_file} has no merges.txt, so --text cannot be "
                            "tokenized: give --ids")
        typed = _tokenized(folder.vocab, folder.merges, text, max_seq)
    else:
        typed = parse_ids(ids or "") if reads_ids else (text or "")
    source = checkpoint.spec_toml(output.stem, model, config, max_seq,
                                  None if bpe_files else tokens, typed, weights_path.name,
                                  checkpoint_file.name, bpe_files)
    params = checkpoint.for_spec(model)
    try:
        spec = parse_spec(source, base=output.parent, origin=str(output),
                          bpe_tokens=lambda: tokens)
        check_params(spec, params, str(checkpoint_file))
    except (SpecError, WeightsError) as e:
        raise UserError(str(e)) from None
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    writer.atomic_write(weights_path, buffer.getvalue())
    written = [weights_path]
    if bpe_files is not None:  # the tokenizer files, beside the spec as it names them
        for name, path in zip(bpe_files, (folder.vocab, folder.merges), strict=True):
            if name:
                writer.atomic_write(output.parent / name, path.read_bytes())
                written.append(output.parent / name)
    writer.atomic_write(output, source.encode("utf-8"))
    for notice in folder.notes if folder is not None else ():
        click.echo(f"note: {notice}", err=True)
    click.echo(f"wrote {output} and {', '.join(map(str, written))}: {model.n_layer} layers, "
               f"{config.n_head} heads, d_model {model.d_model}, {model.vocab_size} tokens, "
               f"{model.layout} layout" + (", input: token ids" if reads_ids else "")
               + (" (text is tokenized with its byte-level BPE)"
                  if bpe_files and bpe_files[1] else ""))


def _tokenized(vocab: Path, merges: Path, text: str, max_seq: int) -> tuple[int, ...]:
    """A text as the token ids of a byte-level BPE; more tokens than max_seq is an error,
    as a text longer than max_seq is for a model that reads characters."""
    try:
        ids = bpe.Tokenizer(vocab, merges).encode(text)
    except bpe.TokenizerError as e:
        raise UserError(str(e)) from None
    if len(ids) > max_seq:
        raise UserError(f"input text is {len(ids)} tokens, more than max_seq ({max_seq})")
    return ids


@main.command("build-all")
@click.option("--check", is_flag=True,
              help="Compare fresh builds with the committed workbooks instead of writing.")
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=SHOWCASE,
              show_default=True, help="Folder of the showcase workbooks.")
def build_all(check: bool, folder: Path) -> None:
    """Rebuild the showcase workbooks, or --check them."""
    stale = []
    for name in catalog.names():
        data = _build_bytes(_load(name), None, None)
        path = folder / f"{name}.xlsx"
        if check:
            if not path.is_file() or _parts(path.read_bytes()) != _parts(data):
                stale.append(str(path))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        writer.atomic_write(path, data)
        click.echo(f"wrote {path}")
    if stale:
        click.echo(f"stale or missing: {', '.join(stale)}; run `xlformer build-all`", err=True)
        sys.exit(1)
    if check:
        click.echo(f"{len(catalog.names())} workbooks in {folder}/ are current")


def _parts(data: bytes) -> dict[str, bytes]:
    """The archive's parts, unzipped: a different zlib must not count as a change."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}
