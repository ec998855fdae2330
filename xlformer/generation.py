"""Live generation: the sheet feeds the token it chose at each position to the next.

A decoder is causal, so position p's output depends on positions 0..p only. The
whole decode is therefore one pass over all positions, laid out once: the token fed
at position p+1 (`gen.ids`) is, by formula, the token chosen at position p
(`output.ids`). No formula of row p reads a later row (the attention ranges stop at
row p), so there is no circular reference and every engine computes the steps in
order. `gen.status` says what each position holds: "prompt" (or "start"),
"generated", "end" (the end token was generated here), or "unused" (after the end,
or past the number of steps), which reads padding.

For an encoder-decoder the input cell is the source: it goes through the encoder
(sheets Enc0, ...), and the decoder (sheets Dec0, ...) starts from the start token
and reads the encoder's output through cross-attention.
"""

from __future__ import annotations

from . import formulas as f
from .book import FORMULA, NUMBER, Cell
from .layout import Area, Flow, Slot


class Generation:
    """The decoder's input band of a generating workbook; `builder._Builder` calls it."""

    def __init__(self, b):
        self.b, self.spec, self.m = b, b.spec, b.spec.model
        self.g = b.spec.generate
        self.consts: dict[str, Area] = {}
        self.status = self.ids = self.chars = None
        self.prompt: Area | None = None  # decoder-only: the prompt's token ids

    def decoder_input(self, flow: Flow, ids: Area) -> Area:
        """Encoder (if any), the generation controls and band, the decoder's embeddings."""
        b, m = self.b, self.m
        if m.encoder_decoder:
            x = b.embeddings(flow, ids, "enc.")
            for i in range(m.n_enc_layer):
                x = b.layer(i, x, "enc.")
            if m.norm == "pre":
                x = b.layer_norm(b.flow, "enc.ln_f", x)
            b.memory = x
        else:
            self.prompt = ids
        self.controls(flow)
        self.status, self.ids, self.chars = b.band(flow, [
            Slot("gen.status", 1, ("status",)), Slot("gen.ids", 1, ("id",)),
            Slot("gen.chars", 1, ("char",))], b.T)
        b.chars = self.chars  # the decoder's rows are labelled with what they read
        return b.embeddings(flow, self.ids, b.dec)

    def controls(self, flow: Flow) -> None:
        """The spec's generation constants, and the prompt's length, in named cells."""
        vocab, g = self.spec.out_vocab, self.g
        slots, cells = [], []
        if not self.m.encoder_decoder:
            slots.append(Slot("gen.prompt_len", 1, ("prompt length",)))
            cells.append(Cell(FORMULA, f.prepare(f.prompt_len(self.b.input_text, self.b.T))))
        else:
            slots.append(Slot("gen.start_id", 1, (f"start {g.start!r}",)))
            cells.append(Cell(NUMBER, vocab.tokens.index(g.start), "weight"))
        slots.append(Slot("gen.steps", 1, ("steps",)))
        cells.append(Cell(NUMBER, g.steps, "weight"))
        slots.append(Slot("gen.pad_id", 1, (f"padding {vocab.pad!r}",)))
        cells.append(Cell(NUMBER, vocab.pad_id, "weight"))
        if g.end:
            slots.append(Slot("gen.end_id", 1, (f"end {g.end!r}",)))
            cells.append(Cell(NUMBER, vocab.tokens.index(g.end), "weight"))
        areas = self.b.band(flow, slots, 1, positions=False)
        for slot, area, cell in zip(slots, areas, cells, strict=True):
            self.b.book.put(area, 0, 0, cell)
            self.b.book.name(slot.name, area)
            self.consts[slot.name] = area

    def feed_back(self, chosen: Area, here: str) -> str:
        """Fill the generation band from the chosen tokens; returns output_text's formula."""
        b, S = self.b, self.status.sheet
        c = {k: a.ref(0, 0, S, absolute=True) for k, a in self.consts.items()}
        plen, end = c.get("gen.prompt_len"), c.get("gen.end_id")

        def status(i: int, _: int) -> str:
            if i == 0:
                return f.first_status(plen) if plen else f.start_status()
            return f.gen_status(i, plen, c["gen.steps"], self.status.ref(i - 1, 0, S),
                                chosen.ref(i - 1, 0, S), end)

        def token(i: int, _: int) -> str:
            if i == 0 and not plen:
                return f.copy(c["gen.start_id"])
            prompt = self.prompt.ref(i, 0, S) if plen else None
            prev = chosen.ref(i - 1, 0, S) if i else None
            return f.fed_token(self.status.ref(i, 0, S), prompt, c["gen.pad_id"], prev)

        vocab = b.vocab.full_ref(S, absolute=True)
        b.fill("gen.status", self.status, status, trace=False)
        b.fill("gen.ids", self.ids, token)
        b.fill("gen.chars", self.chars, lambda i, _: f.fed_char(
            self.status.ref(i, 0, S), vocab, self.ids.ref(i, 0, S)), trace=False)
        return f.generated_text([self.status.ref(i, 0, here) for i in range(b.T)],
                                [self.chars.ref(i, 0, here) for i in range(b.T)])
