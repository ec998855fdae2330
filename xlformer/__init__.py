"""xlformer: compile a small transformer into a workbook of live spreadsheet formulas."""

__version__ = "0.1.0"
