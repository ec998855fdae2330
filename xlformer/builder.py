"""The compiler: lays out every intermediate of the model and fills it with formulas.

`build` walks the model in the same order as `reference.forward` and gives each block
the same name, so block `h.0.attn.head1.weights` on sheet Layer0 is what
`reference.attention` computes as `out["h.0.attn.head1.weights"]`. The only numbers
it writes are weights and spec constants; everything else is a formula from
`formulas.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from . import explain, reference
from . import formulas as f
from .book import FORMULA, LABEL, NUMBER, TEXT, Book, Cell, Chart, Fill, Header
from .fit import fit
from .generation import Generation
from .guide import GUIDE, guide_sheet
from .layout import EXCEL, Area, Flow, SheetLimits, Slot, vocab_down
from .limits import LimitError
from .spec import Spec
from .weights import Params, stack_prefix

INPUT, OUTPUT, WEIGHTS, SPEC = "Input", "Output", "Weights", "Spec"
WEIGHTS_TOP, CONTINUED_TOP = 6, 3  # first band row on Weights (below constants), Weights2...
PAIRWISE = "Pairwise"
ECHO_ROW = 3  # Input sheet row that shows the output text beside the input
JOIN_PART = 256  # characters joined per formula in a long output text
# Beyond these sizes a view for reading is left out (with a notice): it would cost more
# to write and to recompute than it helps anyone read.
PAIRWISE_MAX_CELLS = 250_000  # all heads' pairwise blocks together
HEATMAP_MAX_CELLS = 100_000  # one block's colour scale


def layer_sheet(i: int, stack: str = "") -> str:
    """Layer0, ... (decoder-only); Encoder0, ... and Decoder0, ... (encoder-decoder)."""
    return {"": "Layer", "enc.": "Encoder", "dec.": "Decoder"}[stack] + str(i)


def pairwise_cells(spec: Spec) -> int:
    """Cells of every self-attention head's pairwise view: W_QK (with its bias row and
    column), X · W_QK and the scores from them."""
    m = spec.model
    size, T = m.d_model + 1, m.max_seq
    return (m.n_layer + m.n_enc_layer) * m.n_head * (size * size + T * size + T * T)


def with_pairwise(spec: Spec) -> bool:
    """Whether the workbook has a Pairwise sheet: not when it would be too big."""
    return pairwise_cells(spec) <= PAIRWISE_MAX_CELLS


def build(spec: Spec, params: Params, text: str, sheet: SheetLimits = EXCEL) -> Book:
    """The whole workbook for `spec` with `params`, showing `text` in the input cell,
    laid out for sheets of `sheet`'s size (Excel's unless a test says otherwise)."""
    return _Builder(spec, params, sheet).build(text)


# Blocks as wide as the vocabulary; when it does not fit across a sheet they are stored
# transposed: one row per token, one column per position (or one row for a statistic).
VOCAB_BLOCKS = ("input.onehot", "lm_head.weight", "lm_head.bias", "logits", "probs.max",
                "probs.exp", "probs.sum", "probs")
TRANSPOSED = "layout.transposed"  # the defined name of the list of transposed blocks


def flow_top(sheet: str) -> int:
    """The first band row of a Weights sheet."""
    return WEIGHTS_TOP if sheet == WEIGHTS else CONTINUED_TOP


def transposed_blocks(spec: Spec, sheet: SheetLimits = EXCEL) -> tuple[str, ...]:
    """The blocks stored transposed on sheets of `sheet`'s size; () when the vocabulary
    fits across. Generation and encoder-decoders do not support that layout yet."""
    V = max(len(spec.vocab), len(spec.out_vocab))
    if not vocab_down(V, sheet):
        return ()
    if spec.generate is not None or spec.model.encoder_decoder:
        raise LimitError(f"a vocabulary of {V:,} tokens does not fit across a sheet of "
                         f"{sheet.cols:,} columns and runs down the rows, which [generate] "
                         "and encoder-decoders do not support yet")
    present = {"input.onehot": not spec.reads_ids, "lm_head.weight": not spec.head.tied,
               "lm_head.bias": spec.head.bias}
    return tuple(n for n in VOCAB_BLOCKS if present.get(n, True))


class _Builder:
    def __init__(self, spec: Spec, params: Params, sheet: SheetLimits = EXCEL):
        self.spec, self.m, self.params = spec, spec.model, params
        self.book = Book()
        self.T = spec.model.max_seq
        self.limits = sheet
        self.transposed = transposed_blocks(spec, sheet)
        self.weight_sheet = self.weight_sheets()  # Weights, Weights2, ... of each array
        self.down = bool(self.transposed)  # the vocabulary runs down the rows
        self.w: dict[str, Area] = {}  # weight blocks by parameter name
        self.const: dict[str, Area] = {}  # spec constants and derived scalars
        self.chars: Area | None = None  # per-position characters, the rows' labels
        self.source_chars: Area | None = None  # the input text's characters
        self.vocab: Area | None = None  # the vocabulary row that lookups read
        self.input_text = ""  # absolute reference to the input cell
        self.dec = stack_prefix(spec, "dec")  # prefix of the decoder's names: "" or "dec."
        self.memory: Area | None = None  # encoder-decoder: the encoder's output
        self.generation: Generation | None = None  # when the spec generates: fed back
        self.flow: Flow | None = None  # the sheet flow of the layer built last
        self.pairs = Flow(PAIRWISE, top=3, cols=sheet.cols)  # every head's pairwise view
        self.big_heatmaps = 0  # blocks left without a colour scale: too big

    def build(self, text: str) -> Book:
        m = self.m
        sheets = {
            INPUT: ("the typed token ids" if self.spec.reads_ids else "the input text")
            + ", how each position is read, the embeddings",
            # the guide adds the sub-layers each block is built from
            **{layer_sheet(i, "enc."): f"encoder block {i}" for i in range(m.n_enc_layer)},
            **{layer_sheet(i, self.dec): ("decoder" if self.dec else "transformer")
               + f" block {i}" for i in range(m.n_layer)},
            **({PAIRWISE: "each head's scores as X · W_Q · W_K^T · X^T: the pairwise view"}
               if self.with_pairwise() else {}),
            OUTPUT: "the final vectors, logits, probabilities, the output text and a chart",
            WEIGHTS: "every weight (the only typed-in numbers) and constants",
            **{sheet: "the weights, continued"
               for sheet in dict.fromkeys(self.weight_sheet.values()) if sheet != WEIGHTS},
            SPEC: "the model spec the workbook was built from",
        }
        self.book.sheet(GUIDE)  # first in the workbook; written last, from what is built
        for name in sheets:  # fixes the sheet order
            self.book.sheet(name).widths.update({1: 8, 2: 14})  # labels, captions
            if name != SPEC:  # the sheet's title row and label columns stay in view
                self.book.sheet(name).freeze = "C2"
            else:
                self.book.sheet(name).print_titles = False
        if PAIRWISE in sheets:
            self.pairwise_sheet()
        self.spec_sheet()
        self.weights_sheet()
        x = self.input_sheet(text)
        for i in range(self.m.n_layer):
            x = self.layer(i, x)
        self.output_sheet(x)
        guide_sheet(self.book, self.spec, sheets)
        for sheet in self.book.sheets.values():  # no label cut by its neighbour
            fit(sheet)
        if self.big_heatmaps:
            self.book.notices.append(
                f"{self.big_heatmaps} blocks of more than {HEATMAP_MAX_CELLS:,} cells have "
                "no colour scale")
        return self.book

    def with_pairwise(self) -> bool:
        """The Pairwise sheet, unless it would be too big (then a notice says so)."""
        m = self.m
        if not m.n_layer + m.n_enc_layer:
            return False
        if not with_pairwise(self.spec):
            self.book.notices.append(
                f"the Pairwise sheet is left out: it would add {pairwise_cells(self.spec):,} "
                f"formula cells (more than {PAIRWISE_MAX_CELLS:,})")
            return False
        return True

    def pairwise_sheet(self) -> None:
        self.label(PAIRWISE, 1, 1, "The pairwise view of attention: scores without Q and K",
                   "title")
        self.label(PAIRWISE, 2, 1, "Q · K^T = (X · W_Q) · (X · W_K)^T = X · (W_Q · W_K^T) · X^T:"
                   " a head's scores depend on its weights only through W_QK = W_Q · W_K^T."
                   " X is the head's input (row i = position i); scores_qk equals the head's"
                   " scores on its layer sheet.")

    # --- helpers -----------------------------------------------------------------

    def band(self, flow: Flow, slots: list[Slot], nrows: int,
             positions: bool = True, explained: bool | None = None,
             chars: Area | None = None) -> list[Area]:
        """Place a band of blocks with their titles, column labels and row labels
        (the characters of `chars`, by default the current stack's).

        Explained blocks (by default those whose rows are positions) get their header
        from explain.py; the others (weights) are titled by their name.
        """
        _, areas = flow.band(slots, nrows)
        sheet = self.book.sheet(flow.sheet)
        for slot, area in zip(slots, areas, strict=True):
            title_row = area.row - 2  # a wrapped band's blocks have a title row of their own
            if positions if explained is None else explained:
                self.explain(slot.name, Area(flow.sheet, title_row, area.col, 1, 1), area)
            else:
                sheet.put(title_row, area.col, Cell(LABEL, slot.name, "title"))
                sheet.formats.append((area, "General"))  # weights: as typed, as fits
            if slot.labels:
                self.column_labels(slot, Area(flow.sheet, title_row + 1, area.col, 1,
                                              len(slot.labels)))
        chars = chars or self.chars
        # a wrapped band has rows of positions of its own: labelled after its first block
        firsts = {} if not positions else {
            area.row: slot.name for slot, area in reversed(list(zip(slots, areas, strict=True)))}
        for top, first in sorted(firsts.items()):
            self.book.fill(Fill(f"{first}.positions", Area(flow.sheet, top, 1, nrows, 1),
                                LABEL, lambda i: [f"pos {i}"], "header"))
            if chars is not None and chars.sheet != flow.sheet:
                self.book.fill(Fill(
                    f"{first}.chars", Area(flow.sheet, top, 2, nrows, 1), FORMULA,
                    f.block_rows(lambda i, _: f.copy(chars.ref(i, 0, flow.sheet)), 1), "label"))
        return areas

    def column_labels(self, slot: Slot, area: Area) -> None:
        """A block's column labels: text, or formulas (e.g. a key's live character)."""
        cells = [label if isinstance(label, Cell) else Cell(LABEL, label, "collabel")
                 for label in slot.labels]
        kind, style = cells[0].kind, cells[0].style
        if any((c.kind, c.style) != (kind, style) for c in cells):
            for j, cell in enumerate(cells):
                self.book.put(area, 0, j, cell)
            return
        values = [c.value for c in cells]
        self.book.fill(Fill(f"{slot.name}.labels", area, kind, lambda _: values, style))

    def explain(self, name: str, title: Area, area: Area) -> None:
        """The block's header in its title cell, its note as a comment, its look."""
        if name == "vocab" and self.down:  # a column of tokens
            header = Header("vocabulary: token of each id", f"The model's {len(self.spec.vocab)}"
                            " tokens in id order, one per row (the row labels are the ids); "
                            "the input and the output read their text here.",
                            number_format="General")
        else:
            header = explain.header(name, self.spec)
        if name in self.transposed:
            header = replace(header, note=header.note + " Stored transposed: the vocabulary "
                             "does not fit across the sheet, so each token is a row and each "
                             "position a column.")
        sheet = self.book.sheet(title.sheet)
        sheet.put(title.row, title.col, Cell(LABEL, header.title, "title"))
        self.book.explain(name, title, header)
        sheet.formats.append((area, header.number_format))
        if header.heatmap:
            self.heatmap(title.sheet, area, header.heatmap)

    def heatmap(self, sheet: str, area: Area, kind: str) -> None:
        """A colour scale, unless the block is so big that it would slow every engine
        that opens the workbook (counted, and said once the build is done)."""
        if area.nrows * area.ncols > HEATMAP_MAX_CELLS:
            self.big_heatmaps += 1
            return
        self.book.sheet(sheet).heatmaps.append((area, kind))

    def fill(self, name: str, area: Area, body: Callable[[int, int], str],
             trace: bool = True) -> Area:
        """A formula in every cell of a block, made when written; names the block.

        The corners' formulas (the first and last positions, inside and outside a
        causal window) are made now, so a formula Excel would refuse stops the build
        before anything is written."""
        rows = f.block_rows(body, area.ncols)
        try:
            for i, j in {(0, 0), (0, area.ncols - 1), (area.nrows - 1, 0),
                         (area.nrows - 1, area.ncols - 1)}:
                f.prepare(body(i, j))
        except LimitError as e:
            raise LimitError(f"block {name}: {e}") from None

        def checked(i: int) -> list[str]:
            try:
                return rows(i)
            except LimitError as e:
                raise LimitError(f"block {name}: {e}") from None

        self.book.fill(Fill(name, area, FORMULA, checked))
        if trace:
            self.book.block(name, area)
        else:
            self.book.name(name, area)
        return area

    def label(self, sheet: str, row: int, col: int, text: str, style: str = "") -> None:
        self.book.sheet(sheet).put(row, col, Cell(LABEL, text, style))

    def scalar(self, name: str, sheet: str, row: int, cell: Cell, caption: str) -> Area:
        """A named single cell with its caption to the left."""
        self.label(sheet, row, 2, caption)
        area = Area(sheet, row, 3, 1, 1)
        self.book.put(area, 0, 0, cell)
        self.book.name(name, area)
        return area

    # --- sheets ---------------------------------------------------------------------

    def spec_sheet(self) -> None:
        """The spec's TOML, line by line, so `xlformer verify` can rebuild the reference."""
        self.label(SPEC, 1, 1, "The model spec this workbook was built from", "title")
        for r, line in enumerate(self.spec.source.splitlines(), start=2):
            if line:
                self.book.sheet(SPEC).put(r, 1, Cell(TEXT, line))

    def weights_sheet(self) -> None:
        m = self.m
        self.label(WEIGHTS, 1, 1, "Weights and constants (the only typed-in numbers)", "title")
        self.const["head_size"] = self.scalar(
            "head_size", WEIGHTS, 2, Cell(NUMBER, m.head_size, "weight"), "head size")
        scale = f.inv_sqrt(self.const["head_size"].ref(0, 0, WEIGHTS, absolute=True))
        self.const["attn_scale"] = self.scalar(
            "attn_scale", WEIGHTS, 3, Cell(FORMULA, f.prepare(scale)), "1/sqrt(head size)")
        self.const["ln_eps"] = self.scalar(
            "ln_eps", WEIGHTS, 4, Cell(NUMBER, m.ln_eps, "weight"), "LayerNorm eps")
        if self.transposed:
            self.transposed_list(5)
        flows = {}
        for name, value in self.params.items():
            sheet = self.weight_sheet[name]
            if sheet not in flows:
                flows[sheet] = Flow(sheet, top=flow_top(sheet), cols=self.limits.cols)
                if sheet != WEIGHTS:
                    self.label(sheet, 1, 1, "Weights, continued", "title")
            grid = self.stored(name, value)  # transposed: one row per token
            rows, cols = grid.shape
            [area] = self.band(flows[sheet], [Slot(name, cols, tuple(map(str, range(cols))))],
                               rows, positions=False)
            token_rows = name.endswith("wte") or name in self.transposed
            labels = self.token_rows(name) if token_rows else range(rows)
            self.book.fill(Fill(f"{name}.rows", Area(area.sheet, area.row, 1, rows, 1), LABEL,
                                lambda i, labels=labels: [str(labels[i])], "header"))
            self.book.fill(Fill(name, area, NUMBER, lambda i, grid=grid: grid[i].tolist(),
                                "weight"))
            self.book.name(name, area)
            self.w[name] = area
            if value.ndim == 2 and name.startswith("h."):  # a layer's matrix: its pattern
                self.heatmap(area.sheet, area, "diverging")

    def stored(self, name: str, value: np.ndarray) -> np.ndarray:
        """A weight array as the sheet holds it: a vector is a row, or a column when it
        is transposed; a transposed matrix is (V, d_model)."""
        if name in self.transposed:
            return value.reshape(-1, 1) if value.ndim == 1 else value.T
        return value.reshape(1, -1) if value.ndim == 1 else value

    def weight_sheets(self) -> dict[str, str]:
        """The sheet of each weight array: Weights, and from the array that would cross
        the sheet's last row on, Weights2, then Weights3, ... (planned, nothing written)."""
        where, flow = {}, Flow(WEIGHTS, top=WEIGHTS_TOP, cols=self.limits.cols)
        for name, value in self.params.items():
            rows, cols = self.stored(name, value).shape
            if not flow.fits(rows, self.limits.rows) and flow.next_row > flow_top(flow.sheet):
                flow = Flow(f"{WEIGHTS}{len(set(where.values())) + 1}", top=CONTINUED_TOP,
                            cols=self.limits.cols)
            flow.band([Slot(name, cols)], rows)
            where[name] = flow.sheet
        return where

    def token_rows(self, wte: str) -> tuple[str, ...]:
        """The tokens an embedding table's (or a transposed head's) rows stand for."""
        out = wte == f"{self.dec}wte" or wte.startswith("lm_head.")
        return (self.spec.out_vocab if out else self.spec.vocab).tokens

    def transposed_list(self, row: int) -> None:
        """Which blocks are stored transposed, as text cells under one defined name, so
        that `xlformer verify` reads them back the right way round."""
        self.label(WEIGHTS, row, 2, "stored transposed (one row per token)")
        area = Area(WEIGHTS, row, 3, 1, len(self.transposed))
        for j, name in enumerate(self.transposed):
            self.book.put(area, 0, j, Cell(TEXT, name))
        self.book.name(TRANSPOSED, area)

    def token_labels(self, name: str, area: Area, tokens: tuple[str, ...] = ()) -> None:
        """Row labels of a block whose rows are tokens: the id, then the token (if given)."""
        self.book.fill(Fill(f"{name}.ids", Area(area.sheet, area.row, 1, area.nrows, 1), LABEL,
                            lambda v: [str(v)], "header"))
        if tokens:
            self.book.fill(Fill(f"{name}.tokens", Area(area.sheet, area.row, 2, area.nrows, 1),
                                TEXT, lambda v: [tokens[v]], "label"))

    def vocab_cells(self, vocab: Area) -> None:
        """The vocabulary's tokens, as text: a row, or a column (then labelled with ids)."""
        tokens = self.spec.vocab.tokens
        if self.down:
            self.book.fill(Fill("vocab", vocab, TEXT, lambda v: [tokens[v]]))
            self.token_labels("vocab", vocab)
        else:
            self.book.fill(Fill("vocab", vocab, TEXT, lambda _: list(tokens)))

    def down_band(self, flow: Flow, name: str, nrows: int, tokens: tuple[str, ...] = ()) -> Area:
        """A transposed block in a band of its own: a column per position, a row per token
        (or a single row: a statistic of each position)."""
        [area] = self.band(flow, [Slot(name, self.T, self.key_labels(flow.sheet))], nrows,
                           positions=False, explained=True)
        if tokens:
            self.token_labels(name, area, tokens)
        else:
            self.label(flow.sheet, area.row, 1, "all tokens", "header")
        return area

    def input_sheet(self, text) -> Area:
        """Input text -> characters -> one-hot -> token ids -> embeddings."""
        if self.spec.reads_ids:
            return self.ids_input_sheet(text)
        spec, T, S = self.spec, self.T, INPUT
        self.label(S, 1, 1, f"xlformer: {spec.name}", "title")
        text_cell = self.scalar("input_text", S, 2, Cell(TEXT, text, "input"), "type input here")
        self.input_text = text_cell.ref(0, 0, S, absolute=True)
        self.label(S, ECHO_ROW, 2, "output text")
        pad = self.scalar("pad", S, 5, Cell(TEXT, spec.vocab.pad), "padding token")
        pad_id = self.scalar("pad_id", S, 6, Cell(NUMBER, spec.vocab.pad_id), "padding id")
        flow = Flow(S, top=8, cols=self.limits.cols)
        V = len(spec.vocab)
        slots = [Slot("input.chars", 1, ("char",)), Slot("input.ids", 1, ("id",)),
                 Slot("input.note", 1, ("note",))]
        if self.down:  # the one-hot block below: a row per token, a column per position
            chars, ids, notes = self.band(flow, slots, T)
            self.chars = chars  # its column labels show the characters
            vocab, onehot = self.band(flow, [Slot("vocab", 1, ("token",)), Slot(
                "input.onehot", T, self.key_labels(S))], V, positions=False, explained=True)
            self.vocab_cells(vocab)
            row = onehot.col_ref  # position i's one-hot: a column

            def vocab_at(v: int) -> str:
                return vocab.ref(v, 0, S, absolute=True)
        else:
            chars, ids, notes, onehot = self.band(
                flow, [*slots, Slot("input.onehot", V, spec.vocab.tokens)], T)
            vocab = Area(S, onehot.row - 1, onehot.col, 1, V)  # the one-hot block's header row
            row = onehot.rows_ref

            def vocab_at(v: int) -> str:
                return vocab.ref(0, v, S, absolute=True)
        self.book.name("vocab", vocab)
        self.vocab = vocab
        pad_ref, pad_id_ref = pad.ref(0, 0, S, True), pad_id.ref(0, 0, S, True)
        self.fill("input.chars", chars, lambda i, _: f.char_at(self.input_text, i, pad_ref),
                  trace=False)
        self.chars = self.source_chars = chars
        if self.down:
            self.fill("input.onehot", onehot, lambda v, i: f.one_hot(chars.ref(i, 0, S),
                                                                      vocab_at(v)))
        else:
            self.fill("input.onehot", onehot, lambda i, v: f.one_hot(chars.ref(i, 0, S),
                                                                      vocab_at(v)))
        self.fill("input.ids", ids, lambda i, _: f.token_id(row(i, S), pad_id_ref))
        self.fill("input.note", notes,
                  lambda i, _: f.input_note(self.input_text, i, row(i, S)), trace=False)
        if self.spec.generate is not None:  # the decoder reads back what it chose
            self.generation = Generation(self)
            x = self.generation.decoder_input(flow, ids)
        else:
            x = self.embeddings(flow, ids)
        self.length_note(pad_ref)
        return x

    def length_note(self, pad: str) -> None:
        """What the model makes of the typed text's length, live: cut to max_seq, padded,
        or (a generating decoder's prompt) how much room is left to generate; an
        encoder-decoder's source, also when it is longer than the decoder generates."""
        T, S = self.T, INPUT
        if self.generation is None:  # the output follows the input's positions
            note = f.length_note(self.input_text, T, pad, True)
        else:
            steps = self.generation.consts["gen.steps"].ref(0, 0, S, True)
            note = (f.source_note(self.input_text, T, pad, steps) if self.m.encoder_decoder
                    else f.prompt_note(self.input_text, T, steps))
        self.scalar("input.length_note", S, 4, Cell(FORMULA, f.prepare(note)), "note")

    def ids_input_sheet(self, typed_ids) -> Area:
        """Typed token ids -> checked ids -> tokens -> embeddings; no text, no one-hot."""
        spec, T, S, V = self.spec, self.T, INPUT, len(self.spec.vocab)
        self.label(S, 1, 1, f"xlformer: {spec.name}", "title")
        self.label(S, 2, 2, "type input here")
        self.label(S, 2, 3, f"token ids (whole numbers 0 to {V - 1}) in the yellow column "
                   "'typed id' below, one per position")
        self.label(S, ECHO_ROW, 2, "output text")
        self.scalar("pad", S, 5, Cell(TEXT, spec.vocab.pad), "padding token")
        pad_id = self.scalar("pad_id", S, 6, Cell(NUMBER, spec.vocab.pad_id), "padding id")
        flow = Flow(S, top=8, cols=self.limits.cols)
        if self.down:  # a column of tokens, one row per id
            [vocab] = self.band(flow, [Slot("vocab", 1, ("token",))], V,
                                positions=False, explained=True)
        else:
            [vocab] = self.band(flow, [Slot("vocab", V, tuple(map(str, range(V))))], 1,
                                positions=False, explained=True)
        self.vocab_cells(vocab)
        self.book.name("vocab", vocab)
        self.vocab = vocab
        typed, ids, notes, chars = self.band(
            flow, [Slot("input.typed", 1, ("typed id",)), Slot("input.ids", 1, ("id",)),
                   Slot("input.note", 1, ("note",)), Slot("input.chars", 1, ("token",))], T)
        shown = list(typed_ids[:T]) + [None] * (T - len(typed_ids[:T]))
        for i, value in enumerate(shown):  # empty cells past the ids, yellow all the same
            self.book.put(typed, i, 0, Cell(NUMBER, value, "input"))
        self.book.name("input.typed", typed)
        self.book.sheet(S).whole_numbers.append((typed, 0, V - 1))
        pad_ref = pad_id.ref(0, 0, S, True)
        self.fill("input.ids", ids, lambda i, _: f.typed_id(typed.ref(i, 0, S), V, pad_ref))
        self.fill("input.note", notes, lambda i, _: f.typed_note(typed.ref(i, 0, S), V),
                  trace=False)
        self.fill("input.chars", chars, lambda i, _: self.token_text(S, ids.ref(i, 0, S)),
                  trace=False)
        self.chars = self.source_chars = chars
        return self.embeddings(flow, ids)

    def embeddings(self, flow: Flow, ids: Area, p: str = "") -> Area:
        """Token (and position) embeddings of one stack, names prefixed by `p`."""
        m, S = self.m, flow.sheet
        names = [p + n for n in ("tok_emb", "pos_emb", "embed")]
        if m.positions == "none":
            names = names[:1]
        areas = self.band(flow, [Slot(n, m.d_model, self.dims()) for n in names], self.T)
        wte = self.w[f"{p}wte"].full_ref(S, absolute=True)
        tok = self.fill(names[0], areas[0],
                        lambda i, j: f.lookup(wte, ids.ref(i, 0, S), j))
        if m.positions == "none":
            return tok
        pos = self.fill(names[1], areas[1], self.position_formula(S, p))
        return self.fill(names[2], areas[2],
                         lambda i, j: f.add(tok.ref(i, j, S), pos.ref(i, j, S)))

    def position_formula(self, here: str, p: str = "") -> Callable[[int, int], str]:
        m = self.m
        if m.positions == "learned":
            return lambda i, j: f.copy(self.w[f"{p}wpe"].ref(i, j, here))
        if m.positions == "sinusoidal":
            return lambda i, j: f.sinusoid(i, j, m.d_model)
        first = m.d_model - m.binary_bits  # binary: the code sits in the last dimensions
        return lambda i, j: (f.code_bit(m.binary_codes[i], j - first, m.binary_bits)
                             if j >= first else f.zero())

    # --- one transformer block ---------------------------------------------------------

    def layer(self, i: int, x: Area, stack: str | None = None) -> Area:
        """Block i of a stack ('' decoder-only, 'enc.' or 'dec.'), on its own sheet."""
        stack = self.dec if stack is None else stack
        flow, p = Flow(layer_sheet(i, stack), cols=self.limits.cols), f"{stack}h.{i}"
        self.flow = flow  # the last layer's sheet, where an encoder's final norm goes
        self.label(flow.sheet, flow.skip(2), 1, f"Layer {i} ({p})", "title")
        x = self.sublayer(flow, x, p, "ln_1", "resid_attn", self.attention)
        if stack == "dec.":
            x = self.sublayer(flow, x, p, "ln_cross", "resid_cross", self.cross_attention)
        if self.m.mlp:
            x = self.sublayer(flow, x, p, "ln_2", "resid_mlp", self.mlp)
        return x

    def sublayer(self, flow: Flow, x: Area, p: str, ln: str, resid: str, fn) -> Area:
        """Mirrors reference.sublayer: pre-norm x + f(ln(x)), post-norm ln(x + f(x)).

        `fn` lays out its blocks and, when the model has residuals, leaves room for
        the sum at the end of its last band, so the sum sits beside what it adds.
        """
        m, S, ln, resid = self.m, flow.sheet, f"{p}.{ln}", f"{p}.{resid}"
        h = self.layer_norm(flow, ln, x) if m.norm == "pre" else x
        out, resid_area = fn(flow, p, h, resid)
        y = out
        if resid_area is not None:
            y = self.fill(resid, resid_area,
                          lambda i, j: f.add(x.ref(i, j, S), out.ref(i, j, S)))
        if m.norm == "post":
            y = self.layer_norm(flow, ln, y)
        return y

    def resid_slots(self, resid: str) -> tuple[Slot, ...]:
        return (Slot(resid, self.m.d_model, self.dims()),) if self.m.residual else ()

    def layer_norm(self, flow: Flow, name: str, x: Area) -> Area:
        d, S = self.m.d_model, flow.sheet
        mean, var, rstd, out = self.band(
            flow, [Slot(f"{name}.mean", 1, ("mean",)), Slot(f"{name}.var", 1, ("var",)),
                   Slot(f"{name}.rstd", 1, ("1/sqrt(var+eps)",)),
                   Slot(name, d, self.dims())], self.T)
        eps = self.const["ln_eps"].ref(0, 0, S, absolute=True)
        g, b = self.w[f"{name}.weight"], self.w[f"{name}.bias"]
        self.fill(f"{name}.mean", mean, lambda i, _: f.mean(x.rows_ref(i, S)))
        self.fill(f"{name}.var", var, lambda i, _: f.variance(x.rows_ref(i, S)))
        self.fill(f"{name}.rstd", rstd, lambda i, _: f.rstd(var.ref(i, 0, S), eps))
        return self.fill(name, out, lambda i, j: f.normalize(
            x.ref(i, j, S), mean.ref(i, 0, S, True), rstd.ref(i, 0, S, True),
            g.ref(0, j, S, True), b.ref(0, j, S, True)))

    def linear(self, name: str, area: Area, x: Area, here: str) -> Area:
        """x @ W + b, one MMULT of an input row and a weight column per cell."""
        w, b = self.w[f"{name}.weight"], self.w.get(f"{name}.bias")
        # Each row and column is named once per block, not once per cell.
        rows = [x.rows_ref(i, here) for i in range(area.nrows)]
        cols = [w.col_ref(j, here) for j in range(area.ncols)]
        bias = [None if b is None else b.ref(0, j, here, True) for j in range(area.ncols)]
        return self.fill(name, area, lambda i, j: f.linear(rows[i], cols[j], bias[j]))

    def attention(self, flow: Flow, p: str, x: Area, resid: str) -> tuple[Area, Area | None]:
        m, S, a = self.m, flow.sheet, f"{p}.attn"
        da = m.d_attn
        [qkv] = self.band(flow, [Slot(f"{a}.c_attn", 3 * da, self.head_labels("qkv"))], self.T)
        self.linear(f"{a}.c_attn", qkv, x, S)
        q, k, v = (qkv.window(0, part * da, self.T, da) for part in range(3))
        causal = reference.causal(self.spec, p)
        out = self.heads(flow, a, q, k, v, causal, resid)
        if PAIRWISE in self.book.sheets:
            for h in range(m.n_head):
                self.pairwise(a, h, x, causal)
        return out

    def cross_attention(self, flow: Flow, p: str, x: Area,
                        resid: str) -> tuple[Area, Area | None]:
        """Queries from the decoder's rows, keys and values from the encoder's output.

        c_kv's rows are source positions (labelled with the source's characters): it
        reads the encoder only, so any decoder step may read all of it."""
        m, S, a = self.m, flow.sheet, f"{p}.cross"
        da = m.d_attn
        [cq] = self.band(flow, [Slot(f"{a}.c_q", da, self.head_labels("q"))], self.T)
        self.linear(f"{a}.c_q", cq, x, S)
        [ckv] = self.band(flow, [Slot(f"{a}.c_kv", 2 * da, self.head_labels("kv"))], self.T,
                          chars=self.source_chars)
        self.linear(f"{a}.c_kv", ckv, self.memory, S)
        k, v = (ckv.window(0, part * da, self.T, da) for part in range(2))
        return self.heads(flow, a, cq, k, v, False, resid)

    def head_labels(self, parts: str) -> tuple[str, ...]:
        m = self.m
        return tuple(f"{part}{h}.{c}" for part in parts for h in range(m.n_head)
                     for c in range(m.head_size))

    def heads(self, flow: Flow, a: str, q: Area, k: Area, v: Area, causal: bool,
              resid: str) -> tuple[Area, Area | None]:
        """Every head's softmax band, the heads side by side, c_proj (and room for resid)."""
        m, S, hs, T = self.m, flow.sheet, self.m.head_size, self.T
        outs = []
        for h in range(m.n_head):
            qh, kh, vh = (t.window(0, h * hs, T, hs) for t in (q, k, v))
            for part, area in zip("qkv", (qh, kh, vh), strict=True):
                self.book.block(f"{a}.head{h}.{part}", area)
            outs.append((self.softmax_band(flow, f"{a}.head{h}", qh, kh, causal), vh))
        heads, proj, *tail = self.band(
            flow, [Slot(f"{a}.heads", m.d_attn, self.head_labels("v")),
                   Slot(f"{a}.c_proj", m.d_model, self.dims()), *self.resid_slots(resid)], T)
        # Head h's output in its own columns: weights row times a column of v; under a
        # causal mask both read positions 0..i only, so no row reads a later one.
        n = (lambda i: i + 1) if causal else (lambda i: T)
        self.fill(f"{a}.heads", heads, lambda i, j: f.linear(
            outs[j // hs][0].window(i, 0, 1, n(i)).full_ref(S),
            outs[j // hs][1].window(0, j % hs, n(i), 1).full_ref(S), None))
        for h in range(m.n_head):
            self.book.block(f"{a}.head{h}.out", heads.window(0, h * hs, T, hs))
        return self.linear(f"{a}.c_proj", proj, heads, S), (tail or [None])[0]

    def softmax_band(self, flow: Flow, n: str, q: Area, k: Area, causal: bool) -> Area:
        """scores = q.k^T (scaled); weights = softmax(scores), in visible steps. Returns weights."""
        m, S, T = self.m, flow.sheet, self.T
        keys = self.key_labels(S, self.source_chars if ".cross." in n else None)
        scores, mx, ex, sm, wts = self.band(flow, [
            Slot(f"{n}.scores", T, keys), Slot(f"{n}.max", 1, ("max",)),
            Slot(f"{n}.exp", T, keys), Slot(f"{n}.sum", 1, ("sum",)),
            Slot(f"{n}.weights", T, keys)], T)
        scale = self.const["attn_scale"].ref(0, 0, S, True) if m.scale else None
        # The causal mask is visible in the ranges: row i reads keys 0..i only, and the
        # hidden entries are the constant 0.
        width = (lambda i: i + 1) if causal else (lambda i: T)
        qs, ks = ([t.rows_ref(i, S) for i in range(T)] for t in (q, k))
        self.fill(f"{n}.scores", scores, lambda i, j: f.scaled_dot(qs[i], ks[j], scale)
                  if j < width(i) else f.zero())
        self.fill(f"{n}.max", mx, lambda i, _: f.row_max(
            scores.window(i, 0, 1, width(i)).full_ref(S)))
        self.fill(f"{n}.exp", ex, lambda i, j: f.exp_shifted(
            scores.ref(i, j, S), mx.ref(i, 0, S)) if j < width(i) else f.zero())
        self.fill(f"{n}.sum", sm, lambda i, _: f.row_sum(ex.rows_ref(i, S)))
        return self.fill(f"{n}.weights", wts, lambda i, j: f.divide(
            ex.ref(i, j, S), sm.ref(i, 0, S, True)))

    def pairwise(self, a: str, h: int, x: Area, causal: bool) -> None:
        """W_QK = W_Q . W_K^T, then X . W_QK, then scores = (X . W_QK) . X^T: equal to the
        head's scores. With biases X is read with a column of ones (the last row and
        column of W_QK), as reference.pairwise does."""
        m, S, n, T, d = self.m, PAIRWISE, f"{a}.head{h}", self.T, self.m.d_model
        w, b = self.w[f"{a}.c_attn.weight"], self.w.get(f"{a}.c_attn.bias")
        size = d + (b is not None)
        dims = self.dims() + (("1",) if b is not None else ())

        def w_row(r: int, part: int) -> str:  # row r of W_Q (part 0) or W_K (part 1)
            col = part * m.d_attn + h * m.head_size
            src, i = (w, r) if r < d else (b, 0)
            return src.window(i, col, 1, m.head_size).full_ref(S)

        [wqk] = self.band(self.pairs, [Slot(f"{n}.w_qk", size, dims)], size,
                          positions=False, explained=True)
        for r, label in enumerate(dims):
            self.label(S, wqk.row + r, 1, label, "header")
        self.fill(f"{n}.w_qk", wqk, lambda r, c: f.dot(w_row(r, 0), w_row(c, 1)))
        xw, scores = self.band(self.pairs, [Slot(f"{n}.x_wqk", size, dims),
                                            Slot(f"{n}.scores_qk", T, self.key_labels(S))], T)
        bias_row = (lambda c: wqk.ref(d, c, S, True)) if b is not None else (lambda c: None)
        self.fill(f"{n}.x_wqk", xw, lambda i, c: f.linear(
            x.rows_ref(i, S), wqk.window(0, c, d, 1).full_ref(S, True), bias_row(c)))
        scale = self.const["attn_scale"].ref(0, 0, S, True) if m.scale else None
        width = (lambda i: i + 1) if causal else (lambda i: T)  # as the head's scores
        self.fill(f"{n}.scores_qk", scores, lambda i, j: f.bilinear(
            xw.window(i, 0, 1, d).full_ref(S), x.rows_ref(j, S),
            xw.ref(i, d, S) if b is not None else None, scale) if j < width(i) else f.zero())

    def mlp(self, flow: Flow, p: str, x: Area, resid: str) -> tuple[Area, Area | None]:
        m, S, n = self.m, flow.sheet, f"{p}.mlp"
        ff = tuple(map(str, range(m.d_ff)))
        fc, act = self.band(flow, [Slot(f"{n}.c_fc", m.d_ff, ff), Slot(f"{n}.act", m.d_ff, ff)],
                            self.T)
        self.linear(f"{n}.c_fc", fc, x, S)
        fn = f.gelu if m.activation == "gelu" else f.relu
        self.fill(f"{n}.act", act, lambda i, j: fn(fc.ref(i, j, S)))
        proj, *tail = self.band(
            flow, [Slot(f"{n}.c_proj", m.d_model, self.dims()), *self.resid_slots(resid)], self.T)
        return self.linear(f"{n}.c_proj", proj, act, S), (tail or [None])[0]

    def key_labels(self, here: str, chars: Area | None = None) -> tuple[Cell, ...]:
        """Column labels of a positions x positions block: each key's index and character."""
        chars = chars or self.chars
        return tuple(Cell(FORMULA, f.prepare(f.labelled(j, chars.ref(j, 0, here, True))),
                          "collabel") for j in range(self.T))

    def dims(self) -> tuple[str, ...]:
        return tuple(map(str, range(self.m.d_model)))

    # --- the head ---------------------------------------------------------------------

    def output_sheet(self, x: Area) -> None:
        """ln_f -> logits -> softmax -> argmax -> characters -> output text."""
        spec, S, T, V = self.spec, OUTPUT, self.T, len(self.spec.out_vocab)
        self.label(S, 1, 1, "Output", "title")
        flow = Flow(S, top=4, cols=self.limits.cols)
        if self.m.norm == "pre":
            x = self.layer_norm(flow, f"{self.dec}ln_f", x)
        if self.down:
            self.output_down(flow, x)
            return
        tokens = spec.out_vocab.tokens
        logits, mx = self.band(flow, [Slot("logits", V, tokens), Slot("probs.max", 1, ("max",))],
                               T)
        self.fill("logits", logits, self.logit_formula(x, S))
        if spec.target_vocab is not None:  # the tokens to decode with: logits' header row
            self.vocab = Area(S, logits.row - 1, logits.col, 1, V)
            self.book.name("target_vocab", self.vocab)
        scores, exp = logits, lambda i, j, x, m: f.exp_shifted(x, m)  # the softmax's input
        if self.generation is not None:  # temperature and top-k, in a band of their own
            scores, exp = self.generation.tempered(flow, logits)
        self.fill("probs.max", mx, lambda i, _: f.row_max(scores.rows_ref(i, S)))
        ex, sm = self.band(flow, [Slot("probs.exp", V, tokens), Slot("probs.sum", 1, ("sum",))],
                           T)
        self.fill("probs.exp", ex, lambda i, j: exp(i, j, scores.ref(i, j, S),
                                                    mx.ref(i, 0, S, True)))
        self.fill("probs.sum", sm, lambda i, _: f.row_sum(ex.rows_ref(i, S)))
        [probs] = self.band(flow, [Slot("probs", V, tokens)], T)
        self.fill("probs", probs, lambda i, j: f.divide(ex.ref(i, j, S), sm.ref(i, 0, S, True)))
        drawn = probs if self.generation is None else self.generation.nucleus(flow, probs)
        ids, chars = self.band(flow, [Slot("output.ids", 1, ("id",)),
                                      Slot("output.chars", 1, ("char",))], T)
        def argmax(i: int) -> str:
            return f.argmax(scores.rows_ref(i, S), mx.ref(i, 0, S))

        choice = argmax if self.generation is None else self.generation.sampled(
            flow, drawn, argmax)  # sampled at a temperature above 0
        self.decoded(flow, ids, chars, choice, mx, sm)
        self.probability_chart(flow, probs)

    def output_down(self, flow: Flow, x: Area) -> None:
        """The head of a vocabulary that runs down the rows: logits, the softmax steps and
        probabilities have a row per token and a column per position; each position's
        maximum and sum are one row. Never generates (see __init__)."""
        S, V, tokens = flow.sheet, len(self.spec.out_vocab), self.spec.out_vocab.tokens
        logits = self.down_band(flow, "logits", V, tokens)
        logit = self.logit_formula(x, S)
        self.fill("logits", logits, lambda v, i: logit(i, v))
        mx = self.down_band(flow, "probs.max", 1)
        self.fill("probs.max", mx, lambda _, i: f.row_max(logits.col_ref(i, S)))
        ex = self.down_band(flow, "probs.exp", V, tokens)
        self.fill("probs.exp", ex, lambda v, i: f.exp_shifted(
            logits.ref(v, i, S), mx.ref(0, i, S, True)))
        sm = self.down_band(flow, "probs.sum", 1)
        self.fill("probs.sum", sm, lambda _, i: f.row_sum(ex.col_ref(i, S)))
        probs = self.down_band(flow, "probs", V, tokens)
        self.fill("probs", probs, lambda v, i: f.divide(ex.ref(v, i, S), sm.ref(0, i, S, True)))
        ids, chars = self.band(flow, [Slot("output.ids", 1, ("id",)),
                                      Slot("output.chars", 1, ("char",))], self.T)
        self.decoded(flow, ids, chars, lambda i: f.argmax(logits.col_ref(i, S), mx.ref(0, i, S)),
                     mx, sm)
        row = flow.skip(2)
        self.label(S, row, 1, "Chart", "subheading")
        self.label(S, row + 1, 2, f"no chart: the {V:,} tokens run down the rows; column "
                   "'pos i' of probs is position i's distribution")
        self.book.notices.append(f"the vocabulary ({V:,} tokens) is wider than a sheet: its "
                                 "blocks run down the rows, and there is no probability chart")

    def decoded(self, flow: Flow, ids: Area, chars: Area, choice: Callable[[int], str],
                mx: Area, sm: Area) -> None:
        """The chosen ids, their tokens, the output text and its echo on the input sheet."""
        S = flow.sheet
        self.fill("output.ids", ids, lambda i, _: choice(i))
        self.fill("output.chars", chars, lambda i, _: self.token_text(S, ids.ref(i, 0, S)),
                  trace=False)
        if self.generation is not None:
            text = self.generation.feed_back(flow, ids, chars, mx, sm)
        else:
            text = self.joined(flow, chars)
        out = self.scalar("output_text", S, 2, Cell(FORMULA, f.prepare(text), "output"),
                          "output text")
        echo = Cell(FORMULA, f.prepare(f.copy(out.ref(0, 0, INPUT, True))), "output")
        self.book.sheet(INPUT).put(ECHO_ROW, 3, echo)

    def token_text(self, here: str, token_id: str) -> str:
        """The token of an id, looked up in the vocabulary (a row, or a column when the
        vocabulary runs down the rows)."""
        vocab = self.vocab.full_ref(here, absolute=True)
        return f.token_in_column(vocab, token_id) if self.down else f.token_text(vocab, token_id)

    def probability_chart(self, flow: Flow, probs: Area) -> None:
        """A bar chart of one position's probabilities; the reader types the position."""
        S, T, tokens = flow.sheet, self.T, self.spec.out_vocab.tokens
        row = flow.skip(4)
        self.label(S, row, 1, "Chart", "subheading")
        typed = self.scalar("chart.position", S, row + 1, Cell(NUMBER, 0, "input"),
                            "position to chart")
        self.book.sheet(S).whole_numbers.append((typed, 0, T - 1))
        typed_ref = typed.ref(0, 0, S, True)
        shown = self.scalar("chart.shown", S, row + 2, Cell(FORMULA, f.prepare(
            f.chosen_position(typed_ref, T))), "position shown")
        self.scalar("chart.note", S, row + 3, Cell(FORMULA, f.prepare(
            f.position_note(typed_ref, T))), "note")
        [area] = self.band(flow, [Slot("chart.probs", len(tokens), tokens)], 1,
                           positions=False, explained=True)
        table, at = probs.full_ref(S, True), shown.ref(0, 0, S, True)
        self.fill("chart.probs", area, lambda _, j: f.lookup(table, at, j), trace=False)
        self.book.sheet(S).charts.append(Chart(
            "Output probabilities at the chosen position", area,
            Area(S, area.row - 1, area.col, 1, area.ncols), f"C{flow.skip(18)}",
            "token", "probability"))

    def joined(self, flow: Flow, chars: Area) -> str:
        """All characters in one formula. A long output is joined in parts first, so no
        formula grows past Excel's 8,192 characters, however many positions there are."""
        S, n, sep = flow.sheet, chars.nrows, self.spec.out_vocab.sep
        refs = [chars.ref(i, 0, S) for i in range(n)]
        if n <= JOIN_PART:
            return f.concat(refs, sep)
        starts = range(0, n, JOIN_PART)
        [parts] = self.band(flow, [Slot("output.text_parts", 1, ("text",))], len(starts),
                            positions=False, explained=True)
        for k, start in enumerate(starts):
            self.label(S, parts.row + k, 1, f"pos {start}-{min(start + JOIN_PART, n) - 1}",
                       "header")
        self.fill("output.text_parts", parts,
                  lambda k, _: f.concat(refs[starts[k]:starts[k] + JOIN_PART], sep), trace=False)
        return f.concat([parts.ref(k, 0, S) for k in range(len(starts))], sep)

    def logit_formula(self, x: Area, S: str) -> Callable[[int, int], str]:
        """Tied: x . wte[v] (two rows, SUMPRODUCT). Untied: x @ lm_head[:, v] (+ bias)."""
        b = self.w.get("lm_head.bias")
        bias = (lambda v: None) if b is None else (lambda v: b.ref(0, v, S, True))
        if self.down and b is not None:  # stored as a column
            bias = lambda v: b.ref(v, 0, S, True)  # noqa: E731
        if self.spec.head.tied:
            wte = self.w[f"{self.dec}wte"]
            return lambda i, v: f.with_bias(f.dot(x.rows_ref(i, S), wte.rows_ref(v, S)), bias(v))
        w = self.w["lm_head.weight"]
        if "lm_head.weight" in self.transposed:  # (V, d): token v's weights are a row
            return lambda i, v: f.with_bias(f.dot(x.rows_ref(i, S), w.rows_ref(v, S)), bias(v))
        return lambda i, v: f.linear(x.rows_ref(i, S), w.col_ref(v, S), bias(v))
