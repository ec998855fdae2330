"""Recompute workbooks in a real spreadsheet engine and read the values back.

openpyxl writes formulas without evaluating them, so every computed number
the project checks must come from LibreOffice or Gnumeric.  This module is the
only place that starts those engines.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ENGINES = ("libreoffice", "gnumeric")

_EXECUTABLES = {"libreoffice": ("soffice", "libreoffice"), "gnumeric": ("ssconvert",)}
_INSTALL_HINT = "install it with: apt-get install -y libreoffice-calc-nogui gnumeric"
_STDERR_TAIL = 2000

# OOXML error codes (#DIV/0!, #NAME?, #SPILL!, #ERROR! ...), LibreOffice's
# internal "Err:502" codes, and Gnumeric's '#"<formula text>"' error that it
# stores for formulas it could not parse.
_ERROR_RE = re.compile(
    r'#(?:[A-Z][A-Z0-9/_]*[!?]|N/A|GETTING_DATA|".*")|Err:\d{3}', re.DOTALL
)

# OOXMLRecalcMode 0 = "always recalculate": without it LibreOffice keeps every
# cached <v> value it finds and only computes cells that have none.
_LO_REGISTRY = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" \
xmlns:xs="http://www.w3.org/2001/XMLSchema" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Calc/Formula/Load">\
<prop oor:name="OOXMLRecalcMode" oor:op="fuse"><value>0</value></prop></item>
</oor:items>
"""


class EngineError(RuntimeError):
    """A spreadsheet engine failed, timed out or produced no output."""


class EngineMissing(EngineError):
    """The engine's executable is not installed."""


def available(engine: str) -> bool:
    """Whether `engine` (one of ENGINES) can be run on this machine."""
    try:
        _executable(engine)
    except EngineMissing:
        return False
    return True


def recalc(
    paths: Sequence[Path], engine: str, outdir: Path, timeout: float = 600
) -> list[Path]:
    """Recompute every workbook in `engine`, writing the results as xlsx into `outdir`.

    Inputs must be xlsx.  Outputs keep the input's stem; inputs sharing a stem
    get "-<index>" appended.  `timeout` bounds each engine process (one for all
    files in LibreOffice, one per file in Gnumeric).  Returns the output paths
    in input order.
    """
    exe = _executable(engine)
    paths = [Path(p).absolute() for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"cannot recalc missing workbook(s): {', '.join(missing)}"
        )
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    outputs = [outdir / name for name in _output_names(paths)]
    if not paths:
        return outputs
    if engine == "libreoffice":
        _recalc_libreoffice(exe, paths, outputs, timeout)
    else:
        _recalc_gnumeric(exe, paths, outputs, timeout)
    return outputs


def error_value(value: object) -> str | None:
    """Return the error text if `value` is a spreadsheet error, else None.

    `value` is a cell value read with openpyxl data_only=True.  openpyxl returns
    error cells as plain strings, so a text cell that literally reads "#N/A" is
    indistinguishable and is reported as an error too.
    """
    if isinstance(value, str) and _ERROR_RE.fullmatch(value):
        return value
    return None


def _executable(engine: str) -> str:
    if engine not in _EXECUTABLES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    for name in _EXECUTABLES[engine]:
        found = shutil.which(name)
        if found:
            return found
    names = " or ".join(_EXECUTABLES[engine])
    raise EngineMissing(
        f"{engine}: executable {names} not found on PATH; {_INSTALL_HINT}"
    )


def _output_names(paths: Sequence[Path]) -> list[str]:
    # Both engines write xlsx whatever the input suffix; disambiguate only true clashes.
    names = [f"{p.stem}.xlsx" for p in paths]
    counts = Counter(names)
    unique = [
        n if counts[n] == 1 else f"{p.stem}-{i}.xlsx"
        for i, (p, n) in enumerate(zip(paths, names, strict=True))
    ]
    if len(set(unique)) != len(unique):
        raise ValueError(
            f"cannot give distinct output names to inputs: {[str(p) for p in paths]}"
        )
    return unique


def _recalc_libreoffice(
    exe: str, paths: Sequence[Path], outputs: Sequence[Path], timeout: float
) -> None:
    convert_libreoffice(exe, paths, outputs, "xlsx", timeout)


def convert_libreoffice(
    exe: str, paths: Sequence[Path], outputs: Sequence[Path], convert_to: str,
    timeout: float,
) -> None:
    """Load each file in LibreOffice with every formula recomputed, save as `convert_to`
    (an extension, optionally with a filter, e.g. "pdf:calc_pdf_Export:{...}")."""
    # soffice names each output after its input's basename, so inputs are staged
    # as symlinks "<index><suffix>": this removes basename clashes and keeps
    # soffice from overwriting an input that lives in outdir.
    suffix = "." + convert_to.split(":")[0]
    with tempfile.TemporaryDirectory(
        prefix="xlformer-lo-", ignore_cleanup_errors=True
    ) as tmp:
        work = Path(tmp)
        staged = _stage_links(paths, work / "in")
        converted = work / "out"
        cmd = [
            exe,
            f"-env:UserInstallation={_fresh_profile(work / 'profile').as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            convert_to,
            "--outdir",
            str(converted),
            *map(str, staged),
        ]
        log = _run(cmd, "libreoffice", paths, timeout)
        for src, path, out in zip(staged, paths, outputs, strict=True):
            result = converted / f"{src.stem}{suffix}"
            if not result.is_file():
                # soffice exits 0 even when a file fails to load; its log says why.
                raise EngineError(
                    f"libreoffice produced no output for {path}: {_tail(log)}"
                )
            shutil.move(result, out)


def _stage_links(paths: Sequence[Path], folder: Path) -> list[Path]:
    folder.mkdir()
    staged = [folder / f"{i}{p.suffix}" for i, p in enumerate(paths)]
    for link, target in zip(staged, paths, strict=True):
        link.symlink_to(target)
    return staged


def _fresh_profile(profile: Path) -> Path:
    # A private profile per run: parallel runs sharing one profile collide, and
    # the recalc-on-load setting must be in place before soffice starts.
    user = profile / "user"
    user.mkdir(parents=True)
    (user / "registrymodifications.xcu").write_text(_LO_REGISTRY, encoding="utf-8")
    return profile


def _recalc_gnumeric(
    exe: str, paths: Sequence[Path], outputs: Sequence[Path], timeout: float
) -> None:
    # ssconvert takes one file per process and starts fast, so run them side by side.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = [
            pool.submit(_ssconvert, exe, src, out, timeout)
            for src, out in zip(paths, outputs, strict=True)
        ]
        for job in jobs:
            job.result()  # re-raises the first failure in input order


def _ssconvert(exe: str, src: Path, out: Path, timeout: float) -> None:
    # Force the xlsx importer: by default ssconvert "succeeds" on a corrupt
    # workbook by importing its bytes as text.
    cmd = [exe, "--recalc", "--import-type=Gnumeric_Excel:xlsx", str(src), str(out)]
    log = _run(cmd, "gnumeric", [src], timeout)
    if not out.is_file():
        raise EngineError(f"gnumeric produced no output for {src}: {_tail(log)}")


def _run(cmd: list[str], engine: str, paths: Sequence[Path], timeout: float) -> str:
    """Run an engine with its chatter (GLib warnings...) captured; return the log."""
    files = ", ".join(map(str, paths))
    # Own session so a timeout can kill the whole tree (soffice forks soffice.bin).
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it may have just exited
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise EngineError(
            f"{engine} timed out after {timeout:g}s on {files}: "
            f"{_tail(stdout + stderr)}"
        ) from None
    log = stdout + stderr
    if proc.returncode != 0:
        raise EngineError(
            f"{engine} exited with status {proc.returncode} on {files}: {_tail(log)}"
        )
    return log


def _tail(text: str) -> str:
    text = text.strip()
    return text[-_STDERR_TAIL:] if text else "(no output)"
