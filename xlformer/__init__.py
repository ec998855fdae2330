"""xlformer: compile a small transformer into a workbook of live spreadsheet formulas."""

import os

__version__ = "0.1.0"

# openpyxl serialises through lxml when lxml is installed, and lxml's bytes differ from
# the standard library's (spacing, namespace declarations) in every part of a workbook.
# The same spec must give the same bytes whatever else is installed, so openpyxl must
# use the standard library's XML. It chooses once, when it is first imported, from this
# variable; xlformer.writer refuses to write if openpyxl was imported with lxml first.
os.environ["OPENPYXL_LXML"] = "False"
