"""How far the compiler scales: a ladder of model sizes, from the classroom templates to
the GPT-2-small shape, each built in its own process.

    python benchmarks/scale.py [--max-rung NAME | --only A,B] [--recalc-cap SECONDS]
                               [--mem-cap GB]

Per rung it prints a Markdown table row: parameters, cells written, formula cells, the
cells those formulas read against the model's multiply-adds (xlformer/work.py), build
wall time (weights in hand -> file on disk, as `xlformer build` does it), cells per
second, peak memory of the build process (ru_maxrss) and how much of it is beyond the
weights (the peak less the weight arrays' bytes), file size, bytes per parameter; then
the same numbers of numeric, formula and text cells (formulas and texts of the same
average length) written straight through openpyxl's write-only mode in another process,
and the ratio of the two throughputs; then the time LibreOffice takes to recompute the
file (start-up and saving included).

Guards keep it finishing on a small machine: a rung whose parameters alone would need
more than --mem-cap at the bytes per cell measured on the last rung built, or more than
--build-cap seconds at its cells per second, is not started (the table says so, and
why); a started build is stopped at --mem-cap (address-space limit) or --build-cap.
Recalculation stops at the first rung that takes longer than --recalc-cap. What a
build leaves out at its size (the Pairwise sheet, colour scales) is listed after the
tables.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

GB = 1 << 30
MB = 1 << 20


@dataclass(frozen=True)
class Rung:
    name: str
    what: str  # a template name, or TOML text
    note: str = ""


def model_toml(name: str, d: int, layers: int, heads: int, seq: int, vocab: str,
               seed: int = 0, positions: int | None = None) -> str:
    return f"""name = "{name}"
description = "scale benchmark: d_model {d}, {layers} layers, {heads} heads, {seq} positions"
text = "hello"
{vocab}
[model]
max_seq = {seq}
{f"n_positions = {positions}" if positions else ""}
d_model = {d}
n_head = {heads}
n_layer = {layers}
activation = "gelu"
norm = "pre"
positions = "learned"
causal = true

[weights]
source = "random"
seed = {seed}
std = 0.02
dtype = "float32"
"""


PRINTABLE = '[vocab]\nset = "printable"\npad = " "\n'


def gpt2_vocab(size: int = 50_257) -> str:
    """`size` distinct one-character tokens (the spec's vocabulary is characters), one
    per line so that no line of the Spec sheet passes a cell's 32,767 characters."""
    chars = [chr(c) for c in range(32, 0x30000)
             if chr(c).isprintable() and not 0xD800 <= c < 0xE000][:size]
    lines = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in chars)
    return f'[vocab]\ntokens = [\n{lines},\n]\npad = " "\n'


def ladder() -> list[Rung]:
    from xlformer import catalog

    rungs = [Rung(t, t) for t in catalog.names()]
    rungs += [
        Rung("medium", model_toml("medium", 128, 4, 4, 32, PRINTABLE),
             "d_model 128, 4 layers, 4 heads, 32 positions, 95 printable characters"),
        Rung("large", model_toml("large", 256, 6, 8, 32, PRINTABLE),
             "d_model 256, 6 layers, 8 heads, 32 positions, 95 characters"),
        Rung("gpt2-small", model_toml("gpt2-small", 768, 12, 12, 8, gpt2_vocab(),
                                      positions=1024),
             "GPT-2 small's shape: d_model 768, 12 layers, 12 heads, vocabulary 50,257, "
             "1,024 positions, a sequence of 8 tokens, random float32 weights"),
    ]
    return rungs


def load(rung: Rung):
    from xlformer import catalog
    from xlformer.spec import load_spec, parse_spec

    if rung.what.startswith("name ="):
        return parse_spec(rung.what, origin=rung.name)
    return load_spec(catalog.resolve(rung.what))


def n_params(rung: Rung) -> int:
    from xlformer.weights import expected_shapes

    total = 0
    for shape in expected_shapes(load(rung)).values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


# --- the two child processes ----------------------------------------------------

def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


WINDOW = re.compile(r"\.head\d+\.(q|k|v|out)$")  # windows of c_attn and heads


def child_build(rung: Rung, path: Path) -> dict:
    """Build one rung as `xlformer build` does, timing and measuring each stage."""
    from xlformer import builder, work, writer
    from xlformer.weights import make_weights

    out: dict = {"start_mb": peak_mb()}
    spec = load(rung)
    t0 = time.perf_counter()
    params = make_weights(spec)
    t1 = time.perf_counter()
    out.update(weights_s=t1 - t0, weights_mb=peak_mb(),
               weights_bytes=sum(int(v.nbytes) for v in params.values()))
    book = builder.build(spec, params, spec.text)
    t2 = time.perf_counter()
    out.update(book_s=t2 - t1, book_mb=peak_mb())
    writer.save(book, path)
    t3 = time.perf_counter()
    out.update(save_s=t3 - t2, save_mb=peak_mb(), build_s=t3 - t1, bytes=path.stat().st_size)
    # Everything below is measurement, outside the timed build.
    out.update(sheets=[composition(sheet) for sheet in book.sheets.values()])
    w = work.count(book)
    readers: dict[str, int] = {}  # every layer and head folded together
    for name, bw in work.by_block(book).items():
        if not WINDOW.search(name):
            family = re.sub(r"head\d+", "head*", re.sub(r"^h\.\d+\.", "h.*.", name))
            readers[family] = readers.get(family, 0) + bw.reads
    out.update(top=sorted(readers.items(), key=lambda kv: -kv[1])[:4])
    first = next(iter(params.values())).ravel()  # numbers as the sheet holds them
    out.update(numbers=first[:1000].tolist())
    out.update(cells=book.counts()[0], formulas=w.formulas, reads=w.reads,
               macs=work.macs(spec)["total"], notices=book.notices,
               params=sum(int(v.size) for v in params.values()))
    return out


def composition(sheet) -> dict:
    """How many cells of each kind a sheet holds, their rows and total lengths."""
    from xlformer.book import FORMULA, NUMBER

    kinds = {"number": 0, "formula": 0, "text": 0}
    flen = tlen = 0
    for cell in sheet.cells.values():
        if cell.kind == FORMULA:
            kinds["formula"] += 1
            flen += len(str(cell.value))
        elif cell.kind == NUMBER:
            kinds["number"] += 1
        else:
            kinds["text"] += 1
            tlen += len(str(cell.value))
    for fill in sheet.fills:  # numbers are counted, not made
        size = fill.area.nrows * fill.area.ncols
        if fill.kind == NUMBER:
            kinds["number"] += size
            continue
        lengths = sum(len(str(v)) for i in range(fill.area.nrows) for v in fill.row(i))
        if fill.kind == FORMULA:
            kinds["formula"] += size
            flen += lengths
        else:
            kinds["text"] += size
            tlen += lengths
    return {"rows": sheet.bounds()[0], **kinds, "flen": flen, "tlen": tlen}


def filler_formula(length: int, row: int) -> str:
    """A formula of `length` characters (6 at least), =C1234+1+1...: the book's average
    length, reading a cell that depends on the row, so it is not one repeated string."""
    head = f"=C{row % 9000 + 1000}"
    rest = length - len(head)
    if rest <= 0:
        return head
    if rest % 2 == 0:
        return head + "+1" * (rest // 2)
    return head + ("0" if rest == 1 else "+10" + "+1" * ((rest - 3) // 2))


def child_baseline(sheets: list[dict], numbers: list[float], path: Path) -> dict:
    """The same numbers of cells of each kind, straight through write-only openpyxl:
    per sheet, the same rows, each about equally full, numbers (the build's first
    weights, over and over) then formulas then text. xlformer first: openpyxl then
    serialises as the writer does, without lxml."""
    import xlformer  # noqa: F401, I001 (before openpyxl)
    from openpyxl import Workbook

    t0 = time.perf_counter()
    wb = Workbook(write_only=True)
    for k, s in enumerate(sheets):
        ws = wb.create_sheet(f"S{k}")
        flen = round(s["flen"] / s["formula"]) if s["formula"] else 0
        text = "x" * max(1, round(s["tlen"] / s["text"])) if s["text"] else ""
        kinds = [(s["number"], "number"), (s["formula"], "formula"), (s["text"], "text")]
        stream = (kind for n, kind in kinds for _ in range(n))
        cells = s["number"] + s["formula"] + s["text"]
        rows = max(1, s["rows"])
        weights = itertools.cycle(numbers)
        for r in range(rows):
            width = cells // rows + (r < cells % rows)
            values = {"formula": filler_formula(flen, r), "text": text}
            ws.append([next(weights) if kind == "number" else values[kind]
                       for kind in itertools.islice(stream, width)])
    wb.save(path)
    return {"build_s": time.perf_counter() - t0, "peak_mb": peak_mb(),
            "bytes": path.stat().st_size}


# --- the parent -------------------------------------------------------------------

def run_child(args: list[str], mem_cap: float, time_cap: float) -> dict:
    """Run this script in a child process under an address-space and a time limit."""
    def limit():
        cap = int(mem_cap * GB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([sys.executable, __file__, *args], capture_output=True,
                              text=True, timeout=time_cap, preexec_fn=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped: longer than --build-cap {time_cap:g} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        if "MemoryError" in proc.stderr:
            return {"error": f"stopped: more than --mem-cap {mem_cap:g} GB ({tail[0]})"}
        return {"error": f"failed: {tail[0]}"}
    return json.loads(proc.stdout)


def recalc_time(path: Path, cap: float, tmp: Path) -> tuple[float | None, str]:
    from xlformer import recalc

    start = time.perf_counter()
    try:
        recalc.recalc([path], "libreoffice", tmp / "recalc", timeout=cap)
    except recalc.EngineError as e:
        seconds = time.perf_counter() - start
        lines = [line for line in str(e).splitlines() if line.startswith("Error")]
        return None, (f"{str(e).split(':')[0]} after {seconds:.0f} s "
                      f"({lines[-1] if lines else 'no message'}); {largest_part(path)}")
    return time.perf_counter() - start, ""


def largest_part(path: Path) -> str:
    """The biggest part of a workbook, unzipped: LibreOffice 7.4 loads no part over 2 GiB
    (a sheet of 1.9 GiB of XML loads, one of 2.1 GiB is refused)."""
    with zipfile.ZipFile(path) as z:
        part = max(z.infolist(), key=lambda i: i.file_size)
    return f"its largest part, {part.filename}, is {part.file_size / GB:.2f} GiB unzipped"


def fmt(x, spec=",.0f") -> str:
    return "–" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [r.name for r in ladder()]
    parser.add_argument("--only", help="comma-separated rungs to run instead of the ladder")
    parser.add_argument("--max-rung", choices=names, default=names[-1],
                        help="last rung to try (default: the GPT-2 shape)")
    parser.add_argument("--mem-cap", type=float, default=6.0,
                        help="GB of address space a build may use (default 6)")
    parser.add_argument("--build-cap", type=float, default=3600,
                        help="seconds a build may take (default 3600)")
    parser.add_argument("--recalc-cap", type=float, default=600,
                        help="seconds LibreOffice may take per workbook (default 600); "
                             "0 skips recalculation")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        [rung] = [r for r in ladder() if r.name == args.child]
        print(json.dumps(child_build(rung, Path(args.out))))
        return
    if args.baseline:
        made = json.loads(Path(args.baseline).read_text())
        print(json.dumps(child_baseline(made["sheets"], made["numbers"], Path(args.out))))
        return
    rungs = ladder()[:names.index(args.max_rung) + 1]
    if args.only:
        rungs = [r for r in ladder() if r.name in args.only.split(",")]
    run(rungs, args)


HEADER = ("| rung | params | cells | formulas | cells read | multiply-adds | read/MAC "
          "| build s | cells/s | peak MB | beyond weights MB | file MB | B/param "
          "| baseline cells/s | build/baseline | LO recalc s |")


def run(rungs: list[Rung], args) -> None:
    from xlformer import work

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start; caps: memory {args.mem_cap:g} GB, "
          f"build {args.build_cap:g} s, recalc {args.recalc_cap:g} s\n")
    print(HEADER)
    print("|" + " --- |" * HEADER.count(" | ") + " --- |")
    stages, notes = [], []
    last = None  # the last rung built: bytes per cell and cells per second
    recalc_open = args.recalc_cap > 0
    recalc_why = "" if recalc_open else "not run (--recalc-cap 0)"
    with tempfile.TemporaryDirectory(prefix="xlformer-scale-") as tmp:
        tmp = Path(tmp)
        for rung in rungs:
            params = n_params(rung)
            why = ""
            if last is not None:  # parameters are a lower bound on cells
                need_gb = params * last["mb_per_cell"] / 1024
                need_s = params / last["cells_per_s"]
                if need_gb > args.mem_cap:
                    why = (f"not started: its {params:,} weights alone would take "
                           f"≈{need_gb:.0f} GB at the {last['mb_per_cell'] * MB:,.0f} bytes "
                           f"per cell that {last['name']} used (--mem-cap {args.mem_cap:g})")
                elif need_s > args.build_cap:
                    why = (f"not started: its {params:,} weights alone would take "
                           f"≈{need_s:,.0f} s at {last['name']}'s {last['cells_per_s']:,.0f} "
                           f"cells/s (--build-cap {args.build_cap:g})")
            path = tmp / f"{rung.name}.xlsx"
            got = {"error": why} if why else run_child(
                ["--child", rung.name, "--out", str(path)], args.mem_cap, args.build_cap)
            if "error" in got:
                macs = work.macs(load(rung))["total"]  # from the spec: no build needed
                print(f"| {rung.name} | {params:,} |" + " – |" * 3 + f" {macs:,} |"
                      + " – |" * 10)
                notes.append(f"{rung.name} ({rung.note or 'template'}): {got['error']}")
                continue
            base_spec = tmp / "baseline.json"
            base_spec.write_text(json.dumps({"sheets": got["sheets"], "numbers": got["numbers"]}))
            base = run_child(["--baseline", str(base_spec), "--out", str(tmp / "base.xlsx")],
                             args.mem_cap, args.build_cap)
            cells, secs = got["cells"], got["build_s"]
            rate = cells / secs
            base_rate = cells / base["build_s"] if "build_s" in base else None
            last = {"name": rung.name, "cells_per_s": rate,
                    "mb_per_cell": (got["save_mb"] - got["start_mb"]) / cells}
            seconds = None
            if recalc_open:
                seconds, problem = recalc_time(path, args.recalc_cap, tmp)
                if seconds is None:
                    recalc_open = False
                    recalc_why = f"stopped at {rung.name}: {problem}"
            print(f"| {rung.name} | {got['params']:,} | {cells:,} | {got['formulas']:,} "
                  f"| {got['reads']:,} | {got['macs']:,} | {got['reads'] / got['macs']:.2f} "
                  f"| {secs:.2f} | {rate:,.0f} | {got['save_mb']:,.0f} "
                  f"| {got['save_mb'] - got['weights_bytes'] / MB:,.0f} | {got['bytes'] / MB:.2f} "
                  f"| {got['bytes'] / got['params']:.1f} | {fmt(base_rate)} "
                  f"| {fmt(base_rate and rate / base_rate, '.2f')} "
                  f"| {fmt(seconds, '.1f')} |", flush=True)
            stages.append((rung.name, got, base))
            if got["notices"]:
                notes.append(f"{rung.name} left out: " + "; ".join(got["notices"]))
            path.unlink()
    print("\nWhere the time and memory go (peak RSS after each stage, MB):\n")
    print("| rung | weights s | plan s | write s | after weights "
          "| after plan | after write | baseline s | baseline peak MB | baseline file MB |")
    print("|" + " --- |" * 10)
    for name, g, b in stages:
        print(f"| {name} | {g['weights_s']:.2f} | {g['book_s']:.2f} | {g['save_s']:.2f} "
              f"| {g['weights_mb']:,.0f} | {g['book_mb']:,.0f} "
              f"| {g['save_mb']:,.0f} "
              f"| {fmt(b.get('build_s'), '.2f')} | {fmt(b.get('peak_mb'))} "
              f"| {fmt(b.get('bytes') and b['bytes'] / MB, '.2f')} |")
    print("\nThe blocks that read most cells (all layers and heads together):\n")
    for name, g, _ in stages:
        print(f"- {name}: " + ", ".join(f"{b} {n:,}" for b, n in g["top"]))
    print()
    if not recalc_why and stages:
        recalc_why = f"finished for every rung built, the largest {stages[-1][0]}"
    notes.append(f"LibreOffice recalculation {recalc_why}")
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
