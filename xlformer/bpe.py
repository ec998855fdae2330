"""GPT-2's byte-level BPE: its vocabulary file read, each token shown as text, and text
turned into token ids.

A byte-level BPE (GPT-2's `vocab.json` and `merges.txt`) works on the UTF-8 bytes of a
text, each byte written as one printable character (GPT-2's `bytes_to_unicode`: the
printable bytes stand for themselves, the others are shifted past U+0100, so a space is
'Ġ' and a newline 'Ċ'). A token is a run of such characters. The workbook shows the text
a token stands for ('Ġworld' as ' world'): its bytes decoded as UTF-8, where a byte that
is not part of a whole UTF-8 character (a token may hold half of one) shows as `\\xNN`,
and a character that is not printable (newline, tab, other controls and spaces but ' ')
shows as `\\n`, `\\t`, `\\r` or `\\uNNNN`. Two tokens may then show alike (the byte 0xe2
alone and the text `\\xe2`); the workbook reads ids, so nothing depends on the shown text.

Text is tokenized by Hugging Face's `tokenizers` (an optional extra: `INSTALL_HINT`),
as GPT-2's own tokenizer does: the ByteLevel pre-tokenizer without a prefix space, the
merges in their order, and `<|endoftext|>` read as its one token when the vocabulary
has it. A vocabulary may lack a byte's token; `tokenizers` then leaves the byte out
silently, so `Tokenizer.encode` checks that the tokens spell the text and names the
character they leave out.
"""

from __future__ import annotations

import json
from pathlib import Path

INSTALL_HINT = "pip install 'xlformer[bpe]'"
SPECIAL = "<|endoftext|>"  # GPT-2's one special token
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


class TokenizerError(ValueError):
    """Tokenizer files that cannot be read, or text they cannot encode; one line."""


def _byte_chars() -> dict[int, str]:
    """GPT-2's bytes_to_unicode: byte -> the character that stands for it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + shift)
            shift += 1
    return chars


CHAR_OF = _byte_chars()  # byte -> character
BYTE_OF = {c: b for b, c in CHAR_OF.items()}  # character -> byte


def shown(token: str) -> str:
    """The text a byte-level token stands for, readable in a cell (see the module's
    docstring); a token with characters outside the byte alphabet shows as written."""
    if all(c in BYTE_OF for c in token):
        token = bytes(BYTE_OF[c] for c in token).decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() else _NAMED.get(c, f"\\u{ord(c):04x}") for c in token)


def read_vocab(path: Path) -> list[str]:
    """A JSON list of tokens in id order, or a JSON object token -> id (GPT-2's vocab.json)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"vocabulary {path} is not a readable JSON file: {e}") from None
    if isinstance(data, dict):
        if sorted(data.values()) != list(range(len(data))):
            raise TokenizerError(f"vocabulary {path}: the ids must be 0..{len(data) - 1}")
        data = sorted(data, key=data.__getitem__)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise TokenizerError(f"vocabulary {path} must be a JSON list of strings "
                             "or an object of token -> id")
    return data


class Tokenizer:
    """GPT-2's byte-level BPE from its vocab.json and merges.txt."""

    def __init__(self, vocab: Path, merges: Path):
        try:
            from tokenizers import ByteLevelBPETokenizer
        except ModuleNotFoundError:
            raise TokenizerError("tokenizing text with a BPE vocabulary needs the tokenizers "
                                 f"package: {INSTALL_HINT}") from None
        self.tokens = read_vocab(vocab)
        for path in (vocab, merges):
            if not Path(path).is_file():
                raise TokenizerError(f"tokenizer file {path} does not exist")
        try:
            self._bpe = ByteLevelBPETokenizer(str(vocab), str(merges), add_prefix_space=False)
        except Exception as e:  # tokenizers raises plain Exception for files it refuses
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TokenizerError(f"tokenizer files {vocab} and {merges} cannot be read: "
                                 f"{why}") from None
        if SPECIAL in self.tokens:
            self._bpe.add_special_tokens([SPECIAL])

    def encode(self, text: str) -> tuple[int, ...]:
        """The token ids of `text`; an error names a character the vocabulary cannot spell."""
        ids = tuple(self._bpe.encode(text).ids)
        spelled = b"".join(_bytes(self.tokens[i]) for i in ids)
        if spelled == text.encode("utf-8"):
            return ids
        have = set(self.tokens)
        for at, c in enumerate(text):
            missing = [b for b in c.encode("utf-8") if CHAR_OF[b] not in have]
            if missing:
                raise TokenizerError(f"the tokenizer cannot encode {c!r} at {at}: its "
                                     f"vocabulary has no token for the byte 0x{missing[0]:02x}")
        raise TokenizerError(f"the tokens of {text!r} do not spell it")


def _bytes(token: str) -> bytes:
    if all(c in BYTE_OF for c in token):
        return bytes(BYTE_OF[c] for c in token)
    return token.encode("utf-8")
