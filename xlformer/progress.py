"""The build's progress bar: cells written out of all, and the block being written.

Quiet for builds that finish within a couple of seconds (the classroom templates), and
on anything that is not a terminal, so scripts and tests see only the final line.
"""

from __future__ import annotations

import sys
import time

import click

DELAY = 2.0  # seconds before a bar appears
REDRAW = 0.2  # seconds between redraws


class BuildProgress:
    """Called by the writer once per row: progress(where, cells in that row)."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.start = self.last = time.monotonic()
        self.done, self.where, self.bar = 0, "", None

    def __call__(self, where: str, cells: int) -> None:
        self.done += cells
        now = time.monotonic()
        if now - self.last < REDRAW:
            return
        self.last, self.where = now, where
        if self.bar is None:
            if now - self.start < DELAY or not self.stream.isatty():
                return
            self.bar = click.progressbar(length=self.total, label=self.label,
                                         file=self.stream, show_pos=True,
                                         item_show_func=lambda _: self.where)
            self.bar.__enter__()
        self.bar.update(self.done - self.bar.pos, self.where)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
