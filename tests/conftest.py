"""Imported before any test module: xlformer first, so that openpyxl, which the tests
import too, serialises as the writer needs whether lxml is installed or not (see
xlformer/__init__.py)."""

import xlformer  # noqa: F401
