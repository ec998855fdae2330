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
(sheets Encoder0, ...), and the decoder (sheets Decoder0, ...) starts from the start token
and reads the encoder's output through cross-attention.
"""

from __future__ import annotations

from collections.abc import Callable

from . import formulas as f
from . import reference
from .book import FORMULA, NUMBER, TEXT, Cell
from .layout import Area, Flow, Slot

GENERATING = ("Generation: each position reads the token the sheet chose one row up "
              "(gen.ids reads output.ids), so the steps follow one another, live. Type a "
              "target into target_text for teacher forcing.")
TEACHING = ("Teacher forcing: the decoder reads the target shifted right, not its own "
            "choices, so all positions are computed at once, as in training, and "
            "teacher.loss scores each prediction. Clear target_text to generate.")
CONTRAST = ("Generation feeds the model its own choices, so one mistake changes every later "
            "step; teacher forcing always feeds the right token and scores each step alone.")


class Generation:
    """The decoder's input band of a generating workbook; `builder._Builder` calls it."""

    def __init__(self, b):
        self.b, self.spec, self.m = b, b.spec, b.spec.model
        self.g = b.spec.generate
        self.consts: dict[str, Area] = {}
        self.status = self.ids = self.chars = self.uniform = None
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
        self.status, self.ids, self.chars, self.uniform = b.band(flow, [
            Slot("gen.status", 1, ("status",)), Slot("gen.ids", 1, ("id",)),
            Slot("gen.chars", 1, ("char",)), Slot("gen.uniform", 1, ("uniform u",))], b.T)
        for i, u in enumerate(reference.uniforms(self.spec)):  # typed-in, editable
            b.book.put(self.uniform, i, 0, Cell(NUMBER, float(u), "input"))
        b.book.name("gen.uniform", self.uniform)
        V = len(self.spec.out_vocab)
        self.labels, self.label_ids, self.label_onehot = b.band(flow, [
            Slot("teacher.chars", 1, ("target",)), Slot("teacher.ids", 1, ("id",)),
            Slot("teacher.onehot", V, self.spec.out_vocab.tokens)], b.T)
        b.chars = self.chars  # the decoder's rows are labelled with what they read
        return b.embeddings(flow, self.ids, b.dec)

    def controls(self, flow: Flow) -> None:
        """The spec's generation constants, the prompt's length and the cells a user may
        type into, in named cells; below them, on rows of their own (so a note's text runs
        across them whole), a live note per control when its typed value is not used as
        typed, and on the target, what teacher forcing scores of it."""
        vocab, g, S = self.spec.out_vocab, self.g, flow.sheet
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
        slots.append(Slot("target_text", 1, ("teacher-forcing target",)))
        cells.append(Cell(TEXT, g.target, "input"))
        slots.append(Slot("gen.temperature", 1, ("temperature (0: greedy)",)))
        cells.append(Cell(NUMBER, g.temperature, "input"))
        slots.append(Slot("gen.top_k", 1, ("top-k (0: all)",)))
        cells.append(Cell(NUMBER, g.top_k, "input"))
        slots.append(Slot("gen.top_p", 1, ("top-p (1: all)",)))
        cells.append(Cell(NUMBER, g.top_p, "input"))
        areas = self.b.band(flow, slots, 1, positions=False)
        for slot, area, cell in zip(slots, areas, cells, strict=True):
            self.b.book.name(slot.name, area)
            self.consts[slot.name] = area
            self.b.book.put(area, 0, 0, cell)
        c = {name: area.ref(0, 0, S, absolute=True) for name, area in self.consts.items()}
        notes = [
            ("gen.target_note", "target note",
             f.target_note(c["target_text"], self.b.T, c.get("gen.prompt_len"))),
            ("gen.temperature_note", "temperature note", f.temperature_note(c["gen.temperature"])),
            ("gen.top_k_note", "top-k note", f.top_k_note(c["gen.top_k"], len(vocab))),
            ("gen.top_p_note", "top-p note", f.top_p_note(c["gen.top_p"]))]
        row = flow.skip(len(notes) + 3)
        for k, (name, caption, note) in enumerate(notes):
            self.b.scalar(name, S, row + k, Cell(FORMULA, f.prepare(note)), caption)
        row += len(notes)
        note = f.view_note(c["target_text"], GENERATING, TEACHING)
        self.b.scalar("gen.view", S, row, Cell(FORMULA, f.prepare(note)), "view")
        self.b.label(S, row + 1, 3, CONTRAST)

    def tempered(self, flow: Flow, logits: Area) -> tuple[Area, Callable]:
        """logits / temperature, and which tokens top-k keeps; returns the softmax's input
        and its exp formula (0 for a token top-k drops)."""
        b, S = self.b, flow.sheet
        tokens = self.spec.out_vocab.tokens
        scaled, keep = b.band(flow, [Slot("logits.scaled", logits.ncols, tokens),
                                     Slot("probs.keep", logits.ncols, tokens)], b.T)
        temp, k = (self.consts[n].ref(0, 0, S, True) for n in ("gen.temperature", "gen.top_k"))
        b.fill("logits.scaled", scaled, lambda i, j: f.temper(logits.ref(i, j, S), temp))
        self.scaled, self.keep = scaled, keep
        b.fill("probs.keep", keep, lambda i, j: f.in_top_k(
            scaled.ref(i, j, S), scaled.rows_ref(i, S), k, len(tokens)))
        return scaled, lambda i, j, x, mx: f.kept_exp(keep.ref(i, j, S), x, mx)

    def nucleus(self, flow: Flow, probs: Area) -> Area:
        """Top-p: each row sorted high to low and summed up, the mass ahead of each token,
        which tokens are kept (that mass below p), and their probabilities renormalised;
        returns the probabilities to sample from."""
        b, S, V = self.b, flow.sheet, probs.ncols
        tokens, ranks = self.spec.out_vocab.tokens, tuple(str(k + 1) for k in range(V))
        p = self.consts["gen.top_p"].ref(0, 0, S, True)
        desc, cum = b.band(flow, [Slot("probs.sorted", V, ranks),
                                  Slot("probs.sorted_cum", V, ranks)], b.T)
        ahead, kept, mass = b.band(flow, [Slot("probs.ahead", V, tokens),
                                          Slot("probs.nucleus", V, tokens),
                                          Slot("probs.mass", 1, ("kept mass",))], b.T)
        [final] = b.band(flow, [Slot("probs.top_p", V, tokens)], b.T)
        b.fill("probs.sorted", desc, lambda i, j: f.kth_largest(probs.rows_ref(i, S), j + 1))
        b.fill("probs.sorted_cum", cum, lambda i, j: f.add(
            cum.ref(i, j - 1, S), desc.ref(i, j, S)) if j else f.copy(desc.ref(i, 0, S)))
        b.fill("probs.ahead", ahead, lambda i, j: f.mass_ahead(
            probs.ref(i, j, S), probs.rows_ref(i, S), cum.rows_ref(i, S)))
        b.fill("probs.nucleus", kept, lambda i, j: f.in_top_p(
            self.keep.ref(i, j, S), ahead.ref(i, j, S), p))
        b.fill("probs.mass", mass, lambda i, _: f.dot(probs.rows_ref(i, S), kept.rows_ref(i, S)))
        b.fill("probs.top_p", final, lambda i, j: f.top_p_prob(
            probs.ref(i, j, S), kept.ref(i, j, S), mass.ref(i, 0, S, True), p))
        return final

    def sampled(self, flow: Flow, probs: Area, argmax: Callable[[int], str]):
        """Cumulative probabilities and which of them are <= the position's uniform u;
        returns the choice formula: sampled, or the argmax at temperature 0."""
        b, S, V = self.b, flow.sheet, probs.ncols
        tokens = self.spec.out_vocab.tokens
        cum, below = b.band(flow, [Slot("probs.cum", V, tokens),
                                   Slot("probs.below", V, tokens)], b.T)
        b.fill("probs.cum", cum, lambda i, j: f.row_sum(probs.window(i, 0, 1, j + 1).full_ref(S)))
        b.fill("probs.below", below, lambda i, j: f.at_most(
            cum.ref(i, j, S), self.uniform.ref(i, 0, S, True)))
        temp = self.consts["gen.temperature"].ref(0, 0, S, True)
        return lambda i: f.sample_or_argmax(temp, below.rows_ref(i, S), V, argmax(i))

    def feed_back(self, flow: Flow, chosen: Area, predicted: Area, mx: Area, sm: Area) -> str:
        """Fill the generation band from the chosen tokens, and the teacher-forcing labels
        and loss; returns output_text's formula."""
        b, S = self.b, self.status.sheet
        c = {k: a.ref(0, 0, S, absolute=True) for k, a in self.consts.items()}
        plen, end, target = c.get("gen.prompt_len"), c.get("gen.end_id"), c["target_text"]
        vocab = b.vocab.full_ref(S, absolute=True)
        b.fill("teacher.chars", self.labels, lambda i, _: f.label_char(target, i, plen),
               trace=False)
        b.fill("teacher.onehot", self.label_onehot, lambda i, j: f.one_hot(
            self.labels.ref(i, 0, S), b.vocab.ref(0, j, S, absolute=True)))
        b.fill("teacher.ids", self.label_ids, lambda i, _: f.token_id(
            self.label_onehot.rows_ref(i, S), c["gen.pad_id"]))

        def status(i: int, _: int) -> str:
            if i == 0:
                return f.first_status(plen) if plen else f.start_status()
            return f.gen_status(i, plen, c["gen.steps"], self.status.ref(i - 1, 0, S),
                                chosen.ref(i - 1, 0, S), end, target)

        def token(i: int, _: int) -> str:
            if i == 0 and not plen:
                return f.copy(c["gen.start_id"])
            prompt = self.prompt.ref(i, 0, S) if plen else None
            prev = chosen.ref(i - 1, 0, S) if i else None
            label = self.label_ids.ref(i - 1, 0, S) if i else None
            return f.fed_token(self.status.ref(i, 0, S), prompt, c["gen.pad_id"], prev, label)

        b.fill("gen.status", self.status, status, trace=False)
        b.fill("gen.ids", self.ids, token)
        b.fill("gen.chars", self.chars, lambda i, _: f.fed_char(
            self.status.ref(i, 0, S), vocab, self.ids.ref(i, 0, S)), trace=False)
        self.loss(flow, mx, sm)
        here = flow.sheet
        [shown] = b.band(flow, [Slot("output.shown", 1, ("char",))], b.T)
        b.fill("output.shown", shown, lambda i, _: f.shown_char(
            self.status.ref(i, 0, here), self.chars.ref(i, 0, here),
            self.labels.ref(i, 0, here), predicted.ref(i, 0, here)), trace=False)
        return b.joined(flow, shown)

    def loss(self, flow: Flow, mx: Area, sm: Area) -> None:
        """Teacher forcing's per-position cross-entropy against the target, and its mean."""
        b, S = self.b, flow.sheet
        scored, loss, mean = b.band(flow, [
            Slot("teacher.scored", 1, ("scored",)), Slot("teacher.loss", 1, ("-ln p(target)",)),
            Slot("teacher.mean_loss", 1, ("mean loss",))], b.T)
        mean = mean.window(0, 0, 1, 1)
        b.fill("teacher.scored", scored, lambda i, _: f.scored(self.labels.ref(i, 0, S)))
        b.fill("teacher.loss", loss, lambda i, _: f.cross_entropy(
            scored.ref(i, 0, S), sm.ref(i, 0, S), mx.ref(i, 0, S),
            self.scaled.rows_ref(i, S), self.label_ids.ref(i, 0, S)))
        b.fill("teacher.mean_loss", mean, lambda i, _: f.mean_loss(
            loss.full_ref(S), scored.full_ref(S)))
