"""Training in NumPy: generated examples, the hand-written gradients of grad.py, Adam.

A task turns random draws into (input ids, target ids) rows of the model's max_seq
positions; a target of -1 is not scored. The algorithmic tasks read a string of 1 to
max_seq characters (the vocabulary without its padding token) and answer with a string
of the same positions, padded: `copy` repeats it, `reverse` reverses it, `sort` puts
its characters in vocabulary order. `lm` predicts each next character of a text, where
every run of whitespace counts as one space.
Training is deterministic for a seed: one generator drives initialisation and examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from . import grad, reference
from .spec import TRAIN_TASKS, Spec
from .weights import Params, expected_shapes, to_sheet_precision

HELD_OUT_SEED = 20261123  # the held-out inputs do not depend on the training seed
MIN_HELD_OUT_LENGTH = 3  # shorter inputs are too few to hold any out


class TrainError(ValueError):
    """A task that does not fit the spec or its text."""


# --- tasks ------------------------------------------------------------------------

def _in_vocab_order(spec: Spec, text: str) -> str:
    return "".join(sorted(text, key=spec.vocab.tokens.index))


ANSWERS: dict[str, Callable[[Spec, str], str]] = {
    "copy": lambda spec, text: text,
    "reverse": lambda spec, text: text[::-1],
    "sort": _in_vocab_order,
}
TASKS = TRAIN_TASKS  # the algorithmic ones are ANSWERS, and "lm"


def answer(spec: Spec, task: str, text: str) -> str:
    """What the model should output for `text`: max_seq characters, padded."""
    out = ANSWERS[task](spec, text)
    return out + spec.vocab.pad * (spec.model.max_seq - len(out))


def alphabet(spec: Spec) -> tuple[str, ...]:
    return tuple(t for t in spec.vocab.tokens if t != spec.vocab.pad)


def random_input(spec: Spec, rng: np.random.Generator, min_length: int = 1) -> str:
    chars = alphabet(spec)
    n = int(rng.integers(min_length, spec.model.max_seq + 1))
    return "".join(chars[i] for i in rng.integers(0, len(chars), size=n))


def held_out(spec: Spec, size: int) -> list[str]:
    """Inputs never trained on, the same for every training seed: `size` of them, or half
    of all the inputs they are drawn from if that is fewer."""
    shortest = min(MIN_HELD_OUT_LENGTH, spec.model.max_seq)
    possible = sum(len(alphabet(spec)) ** n for n in range(shortest, spec.model.max_seq + 1))
    rng, out = np.random.default_rng(HELD_OUT_SEED), {}
    while len(out) < min(size, possible // 2):
        out.setdefault(random_input(spec, rng, shortest))
    return list(out)


def algorithmic_batches(spec: Spec, task: str, rng, size: int,
                        excluded: set[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    T = spec.model.max_seq
    while True:
        texts = []
        while len(texts) < size:
            text = random_input(spec, rng)
            if text not in excluded:
                texts.append(text)
        ids = np.array([reference.encode(spec.vocab, t, T) for t in texts])
        targets = np.array([reference.encode(spec.vocab, answer(spec, task, t), T)
                            for t in texts])
        yield ids, targets


def lm_ids(spec: Spec, text: str) -> np.ndarray:
    """The text as token ids; each run of whitespace (line breaks too) is one space."""
    text = " ".join(text.split())
    unknown = sorted(set(text) - set(spec.vocab.tokens))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise TrainError(f"the text has {len(unknown)} characters outside the vocabulary: "
                         f"{shown}")
    need = 10 * (spec.model.max_seq + 2)  # so that the held-out 10% fills a window
    if len(text) < need:
        raise TrainError(f"the text has {len(text)} characters; max_seq {spec.model.max_seq} "
                         f"needs at least {need} (the last 10% is held out)")
    index = {t: i for i, t in enumerate(spec.vocab.tokens)}
    return np.array([index[c] for c in text])


def lm_split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first 90% of the text to train on, the rest held out."""
    cut = len(ids) * 9 // 10
    return ids[:cut], ids[cut:]


def lm_batches(spec: Spec, ids: np.ndarray, rng, size: int):
    """Random windows: each position predicts the character after it."""
    T = spec.model.max_seq
    while True:
        starts = rng.integers(0, len(ids) - T, size=size)
        rows = np.stack([ids[s:s + T + 1] for s in starts])
        yield rows[:, :-1], rows[:, 1:]


# --- optimisation -------------------------------------------------------------------

def init_weights(spec: Spec, rng: np.random.Generator) -> Params:
    """Matrices normal(0, 1/sqrt(fan in)), embeddings normal(0, 0.5), LayerNorm 1 and 0,
    biases 0."""
    params = {}
    for name, shape in expected_shapes(spec).items():
        if name in ("wte", "wpe"):
            params[name] = rng.normal(0.0, 0.5, size=shape)
        elif len(shape) == 2:
            params[name] = rng.normal(0.0, shape[0] ** -0.5, size=shape)
        elif ".ln_" in f".{name}" and name.endswith(".weight"):
            params[name] = np.ones(shape)
        else:
            params[name] = np.zeros(shape)
    return params


@dataclass
class Adam:
    lr: float
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    t: int = 0

    def __post_init__(self):
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, params: Params, grads: grad.Grads, lr: float) -> None:
        self.t += 1
        for k, g in grads.items():
            m = self.m[k] = self.beta1 * self.m.get(k, 0) + (1 - self.beta1) * g
            v = self.v[k] = self.beta2 * self.v.get(k, 0) + (1 - self.beta2) * g * g
            m_hat, v_hat = m / (1 - self.beta1**self.t), v / (1 - self.beta2**self.t)
            params[k] -= lr * m_hat / (np.sqrt(v_hat) + self.eps)


def schedule(lr: float, step: int, steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to lr / 10."""
    warm = max(steps // 20, 1)
    if step < warm:
        return lr * (step + 1) / warm
    done = (step - warm) / max(steps - warm, 1)
    return lr * (0.1 + 0.45 * (1 + np.cos(np.pi * done)))


@dataclass(frozen=True)
class Progress:
    step: int
    loss: float
    accuracy: float  # share of scored positions predicted right, in this batch


def train(spec: Spec, task: str, steps: int, seed: int, text: str | None = None,
          batch: int = 32, lr: float = 1e-2, held_out_size: int = 1000
          ) -> Iterator[Progress | Params]:
    """Check the task, then: a Progress per step, and last the trained weights, rounded
    to 15 significant digits as the workbook holds them."""
    if spec.model.encoder_decoder:
        raise TrainError("training covers models without an encoder (model.n_enc_layer = 0)")
    if spec.reads_ids:
        raise TrainError("training's tasks are texts: it covers models that read text "
                         "(vocab.input = \"text\")")
    rng = np.random.default_rng(seed)
    if task == "lm":
        if text is None:
            raise TrainError("task 'lm' needs a text file (--text FILE)")
        train_ids, _ = lm_split(lm_ids(spec, text))
        batches = lm_batches(spec, train_ids, rng, batch)
    elif task in ANSWERS:
        if text is not None:
            raise TrainError(f"task {task!r} generates its examples and reads no text")
        if not alphabet(spec):
            raise TrainError("the vocabulary has no token besides padding")
        excluded = set(held_out(spec, held_out_size))
        if not excluded:
            raise TrainError("the vocabulary and max_seq allow too few inputs to hold any out")
        batches = algorithmic_batches(spec, task, rng, batch, excluded)
    else:
        raise TrainError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    return _run(spec, init_weights(spec, rng), batches, steps, lr)


def _run(spec: Spec, params: Params, batches, steps: int, lr: float):
    adam = Adam(lr)
    for step in range(steps):
        ids, targets = next(batches)
        loss, grads, logits = grad.loss_and_grads(spec, params, ids, targets)
        adam.step(params, grads, schedule(lr, step, steps))
        keep = targets >= 0
        right = (np.argmax(logits, axis=-1) == targets) & keep
        yield Progress(step + 1, float(loss), float(right.sum() / max(keep.sum(), 1)))
    yield {k: to_sheet_precision(v) for k, v in params.items()}


def evaluate(spec: Spec, params: Params, task: str, text: str | None = None,
             held_out_size: int = 1000) -> tuple[float, int]:
    """Held-out accuracy by the reference (what the workbook computes), and the set's size.

    Algorithmic tasks: share of held-out inputs whose whole output is the answer.
    `lm`: share of next characters predicted right over windows of the held-out text."""
    if task == "lm":
        _, ids = lm_split(lm_ids(spec, text or ""))
        T = spec.model.max_seq
        rows = np.stack([ids[s:s + T + 1] for s in range(0, len(ids) - T, T)])
        logits, _ = grad.forward(spec, params, rows[:, :-1])
        right = np.argmax(logits, axis=-1) == rows[:, 1:]
        return float(right.mean()), right.size
    inputs = held_out(spec, held_out_size)
    ok = sum(predict(spec, params, s) == answer(spec, task, s) for s in inputs)
    return ok / len(inputs), len(inputs)


def predict(spec: Spec, params: Params, text: str) -> str:
    return reference.decode(spec.vocab, reference.forward(spec, params, text)["output.ids"])
