"""Sheet and defined names: only what every engine reads the same way gets through."""

import pytest

from xlformer.book import Book
from xlformer.layout import Area
from xlformer.names import BadName, check_defined_name, check_sheet_name, problem

ACCEPTED = ["Input", "Layer0", "Layer11", "h.0.attn.head1.weights", "ln_f", "_x", "wte",
            "input.ids", "probs.max", "output_text", "XFD1048577x", "RC1x", "Q"]
REJECTED = [
    ("A1", "cell reference"), ("xfd1048576", "cell reference"), ("ROW1", "cell reference"),
    ("ab12", "cell reference"), ("R1C1", "cell reference"), ("r2c", "cell reference"),
    ("R", "cell reference"), ("C", "cell reference"), ("c7", "cell reference"),
    ("TRUE", "logical"), ("false", "logical"),
    ("1abc", "starting with a letter"), (".x", "starting with a letter"),
    ("two words", "letters, digits"), ("it's", "letters, digits"), ("a-b", "letters, digits"),
    ("=HYPERLINK", "letters, digits"), ("", "letters, digits"), ("Ü", "letters, digits"),
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_names_every_engine_reads(name):
    assert problem(name) is None
    assert check_defined_name(name) == name


@pytest.mark.parametrize(("name", "why"), REJECTED)
def test_names_an_engine_would_misread_are_refused(name, why):
    assert why in problem(name)
    with pytest.raises(BadName, match=why):
        check_defined_name(name)
    with pytest.raises(BadName, match=why):
        check_sheet_name(name)


def test_sheet_names_have_at_most_31_characters():
    assert check_sheet_name("S" * 31) == "S" * 31
    with pytest.raises(BadName, match="at most 31 characters"):
        check_sheet_name("S" * 32)
    assert check_defined_name("n" * 255)
    with pytest.raises(BadName, match="at most 255"):
        check_defined_name("n" * 256)


def test_the_book_refuses_bad_names_before_anything_is_written():
    book = Book()
    with pytest.raises(BadName):
        book.sheet("Sheet 1")
    with pytest.raises(BadName):
        book.name("B2", Area("Input", 1, 1, 1, 1))
    assert not book.sheets and not book.names
