"""What each block means, in words and plain math: the text of headers and cell comments.

One place for all of it, keyed by block name, so that a new block gets its explanation
here and the builder only asks `header(name, spec)`. Names follow reference.py:
`h.0.attn.head1.weights` is head 1's attention weights in layer 0.
"""

from __future__ import annotations

import re

from .book import Header
from .spec import Spec

_HEAD = re.compile(r"^(?P<p>.*)\.(?P<kind>attn|cross)\.head(?P<h>\d+)\.(?P<part>\w+)$")
_STACK = re.compile(r"^(?P<s>enc\.|dec\.)(?P<rest>.+)$")
_STACKS = {"enc.": "encoder", "dec.": "decoder"}
GENERAL = "General"  # as many digits as fit: for values that may be large or tiny
_LAYER = re.compile(r"^(?P<s>enc\.|dec\.)?h\.(?P<i>\d+)\.(?P<rest>.+)$")


def header(name: str, spec: Spec) -> Header:
    """The header of block `name`; KeyError for a block nobody has explained yet."""
    m = spec.model
    head = _HEAD.match(name)
    if head:
        h = _head_part(head["part"], int(head["h"]), head["p"], spec)
        if head["kind"] == "cross":
            h = Header(h.title.replace("(head", "(cross, head"),
                       h.note + " Cross-attention: queries are the decoder's positions (rows),"
                       " keys and values the encoder's output at the source positions"
                       " (columns).", h.step, h.heatmap, h.number_format)
        return h
    layer = _LAYER.match(name)
    if layer:
        return _layer_part(layer["rest"], int(layer["i"]), spec, layer["s"] or "")
    stack = _STACK.match(name)
    if stack:  # an encoder's or decoder's own embedding or final norm
        h = header(stack["rest"], spec)
        return Header(f"{h.title} ({_STACKS[stack['s']]})", h.note, h.step, h.heatmap,
                      h.number_format)
    if name.startswith("ln_f"):
        return _norm(name, "ln_f", "the last layer's output", "the final LayerNorm")
    if name in _GENERATION:
        return _GENERATION[name]
    if spec.reads_ids and name in _IDS_INPUT:
        return _IDS_INPUT[name](len(spec.vocab))
    table = {
        "input.chars": Header(
            "character",
            "Each position's character, read from the input cell with MID(text, pos + 1, 1); "
            "past the end of the text it is the padding token.", step=True, number_format=GENERAL),
        "input.ids": Header(
            "token id",
            "The token id of each position: where its one-hot row holds the 1 "
            "(the padding id when the character is not in the vocabulary).",
            number_format="0"),
        "input.note": Header(
            "note", "Why a position reads as padding, if it does.", number_format=GENERAL),
        "input.onehot": Header(
            "one-hot[pos, token] = 1 if char = token",
            "One row per position, one column per vocabulary entry (the header row is the "
            "vocabulary): 1 where the position's character is exactly that token. "
            "EXACT compares case-sensitively.", heatmap="unit", number_format="0"),
        "tok_emb": Header(
            "tok_emb = wte[id]",
            "Token embedding: the row of weight table wte (sheet Weights) for each "
            "position's token id.", step=True),
        "pos_emb": Header(
            "pos_emb = " + {"learned": "wpe[pos]", "sinusoidal": "sin / cos(pos / 10000^(2i/d))",
                            "binary": "±1 bits of the position's code", "none": ""}[m.positions],
            _positions_note(spec)),
        "embed": Header(
            "x = tok_emb + pos_emb",
            "The embedding the first layer reads: token embedding plus position embedding.",
            step=True),
        "logits": Header(
            "logits = x · " + ("wte^T" if spec.head.tied else "W_head")
            + (" + b" if spec.head.bias else ""),
            "One score per vocabulary entry for each position: the final vector times "
            + ("each token's embedding (the head is tied to wte)." if spec.head.tied
               else "the output head lm_head.weight (sheet Weights).")
            + " Higher means more likely.", step=True, heatmap="diverging",
            number_format=GENERAL),
        "probs.max": Header("m = max(logits)", "Each row's largest logit, subtracted "
                            "before EXP so that EXP cannot overflow.", number_format=GENERAL),
        "probs.exp": Header("e = exp(logits − m)", "Shifted exponentials of the logits.",
                            number_format=GENERAL),
        "probs.sum": Header("s = Σ e", "Each row's sum of exponentials.", number_format=GENERAL),
        "probs": Header(
            "probs = softmax(logits) = e / s",
            "The model's probability for each vocabulary entry at each position; each row "
            "sums to 1. The darker the cell, the likelier the token.", step=True,
            heatmap="unit"),
        "output.ids": Header(
            "argmax(logits)", "The most likely token at each position (the first "
            "one on a tie).", number_format="0"),
        "chart.probs": Header(
            "probs[chosen position]",
            "The row of probs at the position typed in the yellow cell above (0 when that "
            "is not a position); the chart below draws it.", step=True, heatmap="unit"),
        "output.text_parts": Header(
            "joined chars", "The output characters joined in parts (one row per range of "
            "positions), so that no formula grows past Excel's 8,192 characters; the output "
            "text joins the parts.", number_format=GENERAL),
        "output.chars": Header(
            "char = vocab[id]", "The most likely token as text; joined, they are the "
            "output text.", step=True, number_format=GENERAL),
    }
    return table[name]


# The input blocks of a spec that reads token ids (vocab.input = "ids"), by vocabulary size.
_IDS_INPUT = {
    "vocab": lambda V: Header(
        "vocabulary: token of each id",
        f"The model's {V} tokens in id order (the column labels are the ids); the token "
        "column below and the output read their text here.", number_format=GENERAL),
    "input.typed": lambda V: Header(
        "typed id",
        f"Type a token id (a whole number from 0 to {V - 1}) per position; an empty cell "
        "is padding.", number_format=GENERAL),
    "input.ids": lambda V: Header(
        "token id",
        f"The typed id when it is a whole number from 0 to {V - 1}; otherwise (empty, text, "
        "a fraction, out of range) the padding id.", number_format="0"),
    "input.note": lambda V: Header(
        "note", "Why a position reads as padding, if it does.", number_format=GENERAL),
    "output.chars": lambda V: Header(
        "token = vocab[id]", "The most likely token as text; joined, they are the output "
        "text.", step=True, number_format=GENERAL),
    "input.chars": lambda V: Header(
        "token = vocab[id]", "Each position's token as text, looked up in the vocabulary "
        "row above.", step=True, number_format=GENERAL),
}


_GENERATION = {
    "gen.status": Header(
        "status", "What each position holds: prompt (or start), generated, end (the end "
        "token was generated here) or unused (read as padding).", number_format=GENERAL),
    "gen.ids": Header(
        "token fed", "The token id each position reads: the prompt's, else the token chosen "
        "one row up (output.ids), so the steps follow one another, live; under teacher "
        "forcing the target one row up.", step=True, number_format="0"),
    "gen.chars": Header("char fed", "The token fed at each position, as text.",
                        number_format=GENERAL),
    "gen.uniform": Header(
        "u (typed)", "A uniform number per position for sampling (typed, like a seed): the "
        "token chosen is the first whose cumulative probability exceeds u.",
        number_format=GENERAL),
    "logits.scaled": Header(
        "logits / temperature", "The logits divided by the temperature (unchanged at "
        "temperature 0, which takes the argmax).", heatmap="diverging", number_format=GENERAL),
    "probs.keep": Header(
        "in top-k", "1 for a token among the k most likely (top-k = 0 keeps all); a token "
        "top-k drops gets probability 0.", heatmap="unit", number_format="0"),
    "probs.sorted": Header(
        "probs sorted high to low", "Each row's probabilities in descending order (LARGE): "
        "column k is the k-th most likely token's.", heatmap="unit"),
    "probs.sorted_cum": Header(
        "cumulative sorted probs", "Running sum of the sorted probabilities: the mass of the "
        "k most likely tokens. Top-p keeps tokens until this reaches p.", heatmap="unit"),
    "probs.ahead": Header(
        "mass ahead", "The probability of the tokens strictly more likely than this one: "
        "RANK - 1 of them, so the sorted running sum just before its place (0 for the most "
        "likely).", heatmap="unit"),
    "probs.nucleus": Header(
        "in nucleus (top-p)", "1 for a token top-p keeps: top-k kept it and the mass ahead "
        "of it is below p, so the most likely token always is, and tokens of equal "
        "probability are kept or dropped together. A top-p of 1, or a typed value that is "
        "not a number above 0 and at most 1, keeps every token top-k keeps.", heatmap="unit",
        number_format="0"),
    "probs.mass": Header("kept mass", "Each row's probability of the tokens in the nucleus.",
                         number_format=GENERAL),
    "probs.top_p": Header(
        "p' = probs / kept mass", "The probabilities sampling draws from: those of the "
        "tokens in the nucleus divided by their mass, so each row sums to 1; the others 0. "
        "With top-p off, probs as they are.", heatmap="unit"),
    "probs.cum": Header("cumulative probs", "Running sum of each row's probabilities p' "
                        "(after top-p).", heatmap="unit"),
    "probs.below": Header(
        "cum ≤ u", "1 where the cumulative probability is at most the position's u; their "
        "count is the sampled token's id.", number_format="0"),
    "output.shown": Header(
        "shown", "Each position's part of the output text: the token it was fed if generated;"
        " under teacher forcing, the prediction where it is scored.", number_format=GENERAL),
    "teacher.chars": Header(
        "target char", "The target character each position is scored against (teacher "
        "forcing): the target shifted by one.", number_format=GENERAL),
    "teacher.ids": Header("target id", "The target character's token id.",
                          number_format="0"),
    "teacher.onehot": Header("target one-hot", "1 where the target character is exactly "
                             "that token.", heatmap="unit", number_format="0"),
    "teacher.scored": Header("scored", "1 where the position has a target to be scored "
                             "against.", number_format="0"),
    "teacher.loss": Header(
        "−ln p(target)", "Cross-entropy: minus the log of the probability the model gives "
        "the target token at this position.", step=True),
    "teacher.mean_loss": Header("mean loss", "The average loss over the scored positions: "
                                "what training would minimize."),
}


def _positions_note(spec: Spec) -> str:
    m = spec.model
    if m.positions == "learned":
        return "Learned position embedding: row pos of weight table wpe (sheet Weights)."
    if m.positions == "sinusoidal":
        return ("Sinusoidal position code of 'Attention is all you need', computed in the "
                "cells: sin in even dimensions, cos in odd ones, slower for higher ones.")
    if m.positions == "binary":
        return (f"Each position's code {list(m.binary_codes)} as {m.binary_bits} bits of ±1 in "
                "the last dimensions, computed in the cells; other dimensions are 0.")
    return ""


def _norm(name: str, base: str, source: str, what: str) -> Header:
    stat = name[len(base):]
    return {
        "": Header(f"{base} = (x − m) · r · g + b",
                   f"{what.capitalize()}: each row of {source} is centred, scaled to unit "
                   f"variance, then scaled by the gain g and shifted by the bias b "
                   f"({base}.weight, {base}.bias on sheet Weights).", step=True),
        ".mean": Header("m = avg(x)", f"Mean of each row of {source}."),
        ".var": Header("v = avg((x−m)²)", f"Population variance of each row of "
                       f"{source}."),
        ".rstd": Header("r = 1/√(v+ε)", "Reciprocal standard deviation; ε = ln_eps "
                        "(sheet Weights) keeps it finite."),
    }[stat]


def _layer_part(rest: str, i: int, spec: Spec, stack: str = "") -> Header:
    m, p = spec.model, f"{stack}h.{i}"
    source = "the embedding" if i == 0 else f"layer {i - 1}'s output"
    b = " + b" if m.bias else ""
    for ln, what, resid, before in (
            ("ln_1", "before attention", "attn", source),
            ("ln_cross", "before cross-attention", "cross", f"{p}.resid_attn"),
            ("ln_2", "before the feed-forward layer", "mlp",
             f"{p}.resid_cross" if stack == "dec." else f"{p}.resid_attn")):
        if rest.startswith(ln):
            post = m.norm == "post"
            src = f"the residual sum {p}.resid_{resid}" if post else before
            return _norm(rest, ln, src, f"LayerNorm {'after the sum' if post else what}")
    x_attn = f"{p}.ln_1" if m.norm == "pre" else source
    x_mlp = (f"{p}.ln_2" if m.norm == "pre" else
             f"{p}.ln_1" if m.norm == "post" else f"{p}.resid_attn" if m.residual else
             f"{p}.attn.c_proj")
    da, hs = m.d_attn, m.head_size
    table = {
        "attn.c_attn": Header(
            f"[Q | K | V] = X · W_attn{b}",
            f"X is {x_attn}. One matrix product gives every head's queries, keys and values "
            f"side by side: columns q{{h}}.* are head h's Q ({hs} columns each), then the "
            f"K columns, then the V columns ({3 * da} in all). W_attn is "
            f"{p}.attn.c_attn.weight on sheet Weights.", step=True),
        "attn.heads": Header(
            "out = weights · V, per head",
            "Each head's output: a weighted average of the value rows V, with that head's "
            "attention weights. Columns v{h}.* are head h's.", step=True),
        "attn.c_proj": Header(
            f"attn = heads · W_O{b}",
            f"The heads mixed back into {m.d_model} dimensions by {p}.attn.c_proj.weight.",
            step=True),
        "cross.c_q": Header(
            f"Q = X · W_q{b} (cross)", "The decoder's queries for cross-attention, every head "
            "side by side; X is the decoder's current vector.", step=True),
        "cross.c_kv": Header(
            f"[K | V] = memory · W_kv{b} (cross)", "Keys and values from the encoder's output "
            "(rows are source positions): what the decoder can look up in the input.",
            step=True),
        "cross.heads": Header(
            "out = weights · V, per head (cross)", "Each cross-attention head's output: a "
            "weighted average of the encoder's values.", step=True),
        "cross.c_proj": Header(
            f"cross = heads · W_O{b}", "The cross-attention heads mixed back into "
            f"{m.d_model} dimensions.", step=True),
        "resid_cross": Header(
            "x + cross", "Residual sum: what entered cross-attention plus its output.",
            step=True),
        "resid_attn": Header(
            "x + attn", f"Residual sum: the layer's input ({source}) plus the attention "
            "output, so attention only has to add what changes.", step=True),
        "mlp.c_fc": Header(
            f"h = X · W_fc{b}", f"X is {x_mlp}. The feed-forward layer widens each position "
            f"to {m.d_ff} dimensions.", step=True),
        "mlp.act": Header(
            "a = " + ("GELU(h)" if m.activation == "gelu" else "max(0, h)"),
            "The nonlinearity, applied to each cell: "
            + ("GELU in GPT-2's tanh form." if m.activation == "gelu" else "ReLU.")),
        "mlp.c_proj": Header(
            f"mlp = a · W_proj{b}", f"Back to {m.d_model} dimensions.", step=True),
        "resid_mlp": Header(
            "x + mlp", "Residual sum: what entered the feed-forward sub-layer plus its "
            "output.", step=True),
    }
    return table[rest]


def _head_part(part: str, h: int, p: str, spec: Spec) -> Header:
    m = spec.model
    hs = m.head_size
    n = f"{p}.attn.head{h}"
    scale = f" / √{hs}" if m.scale else ""
    mask = (" The causal mask: position i sees keys 0..i only, so entries right of the "
            "diagonal get weight 0." if m.causal else "")
    table = {
        "q": Header(f"Q = X · W_Q (head {h})", "This head's queries: what each position "
                    "looks for."),
        "k": Header(f"K = X · W_K (head {h})", "This head's keys: what each position "
                    "offers to be found by."),
        "v": Header(f"V = X · W_V (head {h})", "This head's values: what each position "
                    "passes on when attended to."),
        "scores": Header(
            f"scores = Q · K^T{scale} (head {h})",
            f"Row i, column j: how well query i matches key j (a dot product of row i of Q "
            f"and row j of K, from {p}.attn.c_attn{', times attn_scale' if m.scale else ''})."
            " Red is high, blue low.", step=True, heatmap="diverging"),
        "max": Header("m = max_j scores", "Each row's largest allowed score, "
                      "subtracted before EXP." + mask),
        "exp": Header(f"e = exp(scores − m) (head {h})", "Shifted exponentials." + mask),
        "sum": Header("s = Σ_j e", "Each row's sum of exponentials."),
        "weights": Header(
            f"weights = softmax(scores) (head {h})",
            "Row i says how much position i attends to each position j (e / s); each row "
            "sums to 1. A dark cell in row i, column j: position i reads position j's value."
            + mask, step=True, heatmap="unit"),
        "out": Header(f"out = weights · V (head {h})", "This head's output."),
        "w_qk": Header(
            f"W_QK = W_Q · W_K^T (head {h})",
            f"The pairwise view of head {h}: a {m.d_model}x{m.d_model} matrix whose entry "
            f"[a, b] says how much dimension a of a query position and dimension b of a key "
            f"position raise the score together. Since Q · K^T = X · W_Q · W_K^T · X^T, the "
            f"head's scores depend on the weights only through W_QK."
            + (" The last row and column (1) carry the biases: X is extended by a column "
               "of ones." if m.bias else ""), step=True, heatmap="diverging"),
        "x_wqk": Header(
            f"X · W_QK (head {h})",
            "Each position's input times W_QK: what it would match in a key position's "
            "input." + (" The last column adds the query bias's part." if m.bias else "")),
        "scores_qk": Header(
            f"scores = X · W_QK · X^T{scale} (head {h})",
            f"The same scores as {n}.scores, computed without Q and K: (X · W_QK) times "
            f"each key position's input. Equal because (X·W_Q)·(X·W_K)^T = X·(W_Q·W_K^T)·X^T.",
            heatmap="diverging"),
    }
    return table[part]
