"""Training data for the bundled demo model: corpus text, generated IOI sentences, repeats.

- `read_corpus(dir)` reads ONLY `dir/*.txt` (never `dir/heldout/`); `read_heldout(dir)` reads
  `dir/heldout/*.txt`, for evaluation only.
- IOI ("indirect object identification") sentences are built from an intro clause that names two
  people and an ending in which one of them (the subject S) does something "to" the other (the
  indirect object IO): "When Mary and John went to the store, John gave a drink to" -> " Mary".
  A *template* is one (intro, ending) pair. The pairs are split, deterministically, into
  TRAIN_TEMPLATES and HELDOUT_TEMPLATES: every intro and every ending appears in training, but no
  held-out pair (the exact sentence structure) is ever generated for training.
- Induction data: random token sequences repeated once, and spans of corpus text copied later
  in the same context.
- `MixedStream(...).batch(step)` is a pure function of (seed, step), so a resumed run sees
  exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tiktoken

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"
HELDOUT_SUBDIR = "heldout"


# ----------------------------------------------------------------------------- corpus


def corpus_files(corpus_dir: str | Path = DEFAULT_CORPUS_DIR) -> list[Path]:
    """The training files: `corpus_dir/*.txt`, sorted; never anything under heldout/."""
    files = sorted(p for p in Path(corpus_dir).glob("*.txt") if p.is_file())
    assert all(HELDOUT_SUBDIR not in p.relative_to(corpus_dir).parts for p in files)
    if not files:
        raise FileNotFoundError(f"no *.txt training files in {corpus_dir}")
    return files


def heldout_files(corpus_dir: str | Path = DEFAULT_CORPUS_DIR) -> list[Path]:
    files = sorted(Path(corpus_dir, HELDOUT_SUBDIR).glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt files in {Path(corpus_dir, HELDOUT_SUBDIR)}")
    return files


def read_corpus(corpus_dir: str | Path = DEFAULT_CORPUS_DIR) -> list[str]:
    """The training texts (one string per file)."""
    return [p.read_text(encoding="utf-8") for p in corpus_files(corpus_dir)]


def read_heldout(corpus_dir: str | Path = DEFAULT_CORPUS_DIR) -> list[str]:
    """The held-out texts: for evaluation only, never for training."""
    return [p.read_text(encoding="utf-8") for p in heldout_files(corpus_dir)]


# -------------------------------------------------------------------------------- IOI

# Common first names; only those that are one token (with a leading space) in the model's
# tokenizer are used (`single_token_names`).
NAMES = [
    "Mary",
    "John",
    "Tom",
    "James",
    "Anna",
    "Paul",
    "Kate",
    "Mark",
    "Alice",
    "Peter",
    "Sarah",
    "David",
    "Emma",
    "Jack",
    "Lucy",
    "Henry",
    "Jane",
    "Robert",
    "Susan",
    "George",
    "Laura",
    "Frank",
    "Helen",
    "Edward",
    "Ruth",
    "Charles",
    "Rose",
    "Arthur",
    "Grace",
    "William",
    "Clara",
    "Harry",
    "Amy",
    "Fred",
    "Lily",
    "Sam",
    "Nancy",
    "Bill",
    "Ellen",
    "Joe",
    "Martha",
    "Dan",
    "Emily",
    "Ben",
    "Sophie",
    "Max",
    "Julia",
    "Tim",
    "Eva",
    "Jim",
    "Nora",
    "Mike",
    "Lisa",
    "Adam",
    "Kim",
    "Carl",
    "Molly",
    "Luke",
    "Ann",
    "Roger",
    "Beth",
    "Simon",
    "Jenny",
    "Hugh",
    "Dora",
    "Oscar",
    "Maggie",
    "Victor",
    "Lena",
    "Ralph",
    "Ida",
    "Walter",
    "Nell",
    "Leo",
    "Joan",
    "Philip",
    "Agnes",
    "Louis",
    "Betty",
    "Tony",
    "Polly",
]

PLACES = [
    "store",
    "school",
    "park",
    "house",
    "garden",
    "station",
    "market",
    "river",
    "church",
    "office",
    "beach",
    "farm",
    "library",
    "kitchen",
    "forest",
    "village",
    "hospital",
    "restaurant",
    "museum",
    "harbor",
    "castle",
    "bakery",
    "square",
    "hill",
]
OBJECTS = [
    "drink",
    "book",
    "ring",
    "letter",
    "apple",
    "flower",
    "key",
    "cake",
    "basket",
    "coin",
    "hat",
    "pen",
    "bottle",
    "box",
    "map",
    "candle",
    "bag",
    "ball",
    "cup",
    "shell",
    "knife",
    "stone",
    "gift",
    "lamp",
]
ADJECTIVES = [
    "tired",
    "happy",
    "hungry",
    "angry",
    "kind",
    "clever",
    "quiet",
    "curious",
    "cheerful",
    "sleepy",
]

# Intro clauses naming two people; {A} and {B} are the two names in order of appearance.
INTROS = (
    "When {A} and {B} went to the {place},",
    "After {A} and {B} arrived at the {place},",
    "While {A} and {B} were walking near the {place},",
    "{A} and {B} went to the {place}.",
    "{A} and {B} had a long talk at the {place}.",
    "Then, {A} and {B} were working at the {place}.",
    "Yesterday {A} and {B} met at the {place}, and",
    "Once {A} and {B} were at the {place},",
    "{A} and {B}, who were {adj}, sat in the {place}.",
    "Since {A} and {B} were both at the {place},",
    "In the morning {A} and {B} visited the {place}.",
    "Because {A} and {B} were {adj} after a day at the {place},",
    "The {place} was quiet when {A} and {B} came in, so",
    "{A} met {B} at the {place}, and afterwards",
    "{A} and {B} walked home from the {place}. Later",
    "At the {place}, {A} and {B} found a {object2}. Then",
)
# Endings: {S} is the repeated name (the subject); the IO completes the sentence.
ENDINGS = (
    "{S} gave a {object} to",
    "{S} handed the {object} to",
    "{S} said goodbye to",
    "{S} gave the {object} back to",
    "{S} quickly passed the {object} to",
    "{S} decided to give a {object} to",
    "{S} threw the {object} to",
    "{S} showed the {object} to",
    "{S} sent a {object} to",
    "{S}, who was {adj}, gave a {object} to",
    "so {S} gave a {object} to",
    "{S} kindly offered a {object} to",
    "{S} brought a {object} to",
    "{S} wrote a letter to",
    "{S} sold the {object} to",
    "{S} lent the {object} to",
)

ALL_TEMPLATES: tuple[tuple[int, int], ...] = tuple(
    itertools.product(range(len(INTROS)), range(len(ENDINGS)))
)


def _split_templates() -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    # A fixed Latin-square-like choice: pair (i, e) is held out when (e - 3 i) % 8 == 0, so each
    # intro loses 2 of its 16 endings and each ending 2 of its 16 intros (1/8 of all pairs).
    held = tuple((i, e) for i, e in ALL_TEMPLATES if (e - 3 * i) % 8 == 0)
    train = tuple(t for t in ALL_TEMPLATES if t not in held)
    return train, held


TRAIN_TEMPLATES, HELDOUT_TEMPLATES = _split_templates()


def template_text(template: tuple[int, int]) -> str:
    """The template with its slots, e.g. "When {A} and {B} went to the {place}, {S} gave ..."."""
    intro, ending = INTROS[template[0]], ENDINGS[template[1]]
    if ending.startswith("so "):
        if intro.endswith("."):
            ending = "So " + ending[3:]
        elif not intro.endswith(","):  # "..., so", "and", "Then", "Later", "afterwards"
            # (dropping "so" would make this the same sentence as ending 0)
            ending = ending[3:].replace(" gave ", " happily gave ", 1)
    return intro + " " + ending


@dataclass(frozen=True)
class IOIPrompt:
    text: str  # ends just before the indirect object, e.g. "..., John gave a drink to"
    io: str  # " Mary" (with the leading space)
    s: str  # " John"
    template: tuple[int, int]
    order: str  # "ABBA" (IO first) or "BABA" (S first)


def make_ioi_prompt(
    rng: np.random.Generator, template: tuple[int, int], names: Sequence[str]
) -> IOIPrompt:
    io, s = rng.choice(len(names), size=2, replace=False)
    io_name, s_name = names[io], names[s]
    order = "ABBA" if rng.random() < 0.5 else "BABA"
    a, b = (io_name, s_name) if order == "ABBA" else (s_name, io_name)
    obj, obj2 = rng.choice(len(OBJECTS), size=2, replace=False)
    text = template_text(template).format(
        A=a,
        B=b,
        S=s_name,
        place=PLACES[rng.integers(len(PLACES))],
        object=OBJECTS[obj],
        object2=OBJECTS[obj2],
        adj=ADJECTIVES[rng.integers(len(ADJECTIVES))],
    )
    return IOIPrompt(text, " " + io_name, " " + s_name, template, order)


def ioi_prompts(
    n: int,
    names: Sequence[str],
    *,
    heldout: bool,
    seed: int = 0,
) -> list[IOIPrompt]:
    """n prompts cycling through the held-out (or training) templates."""
    rng = np.random.default_rng(seed)
    templates = HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES
    return [make_ioi_prompt(rng, templates[i % len(templates)], names) for i in range(n)]


def ioi_training_sentences(n: int, names: Sequence[str], seed: int) -> list[str]:
    """n complete training sentences ("... gave a drink to Mary."), training templates only."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = TRAIN_TEMPLATES[rng.integers(len(TRAIN_TEMPLATES))]
        p = make_ioi_prompt(rng, t, names)
        out.append(p.text + p.io + ".")
    return out


def single_token_names(enc: tiktoken.Encoding, names: Sequence[str] = NAMES) -> list[str]:
    """The names that are one token with a leading space, in order, without duplicates."""
    seen: set[int] = set()
    out = []
    for name in names:
        ids = enc.encode_ordinary(" " + name)
        if len(ids) == 1 and ids[0] not in seen:
            seen.add(ids[0])
            out.append(name)
    return out


# -------------------------------------------------------------------------- induction


def repeated_random_tokens(
    rng: np.random.Generator, n_seqs: int, length: int, vocab: int, bos: int | None = None
) -> np.ndarray:
    """(n_seqs, 2*length [+1]) rows: [bos] + r + r with r uniform over [0, vocab)."""
    r = rng.integers(0, vocab, size=(n_seqs, length))
    rows = np.concatenate([r, r], axis=1)
    if bos is not None:
        rows = np.concatenate([np.full((n_seqs, 1), bos), rows], axis=1)
    return rows


# ------------------------------------------------------------------------------ mixing


@dataclass
class Mix:
    corpus: float
    ioi: float
    repeats: float


class MixedStream:
    """Deterministic batches of (ctx+1)-token rows mixing corpus windows, IOI sentences and
    repeated sequences; `batch(step)` depends only on (seed, step, mix)."""

    def __init__(
        self,
        corpus_tokens: np.ndarray,
        ioi_pool: list[list[int]],
        *,
        vocab: int,
        eot: int,
        newline: int,
        ctx: int,
        seed: int,
        copy_prob: float = 0.3,
    ) -> None:
        self.corpus = corpus_tokens
        self.ioi_pool = ioi_pool
        self.vocab = vocab
        self.eot = eot
        self.newline = newline
        self.ctx = ctx
        self.seed = seed
        self.copy_prob = copy_prob

    def batch(self, step: int, batch_size: int, mix: Mix) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step])
        kinds = rng.choice(
            3,
            size=batch_size,
            p=np.array([mix.corpus, mix.ioi, mix.repeats]) / (mix.corpus + mix.ioi + mix.repeats),
        )
        rows = [self._row(rng, int(k)) for k in kinds]
        return np.stack(rows).astype(np.int64)

    def _row(self, rng: np.random.Generator, kind: int) -> np.ndarray:
        n = self.ctx + 1
        if kind == 0:
            start = int(rng.integers(0, len(self.corpus) - n))
            row = self.corpus[start : start + n].copy()
            if rng.random() < self.copy_prob:  # copy a span later in the same context
                length = int(rng.integers(8, min(33, n // 3)))
                src = int(rng.integers(0, n - 2 * length))
                dst = int(rng.integers(src + length, n - length + 1))
                row[dst : dst + length] = row[src : src + length]
            return row
        if kind == 1:
            out: list[int] = [self.eot]
            while len(out) < n:
                out += self.ioi_pool[int(rng.integers(len(self.ioi_pool)))]
                out.append(self.eot if rng.random() < 0.3 else self.newline)
            return np.array(out[:n])
        out = [self.eot]
        while len(out) < n:
            length = int(rng.integers(5, 40))
            if rng.random() < 0.5:  # uniform random tokens
                seq = rng.integers(0, self.vocab - 1, size=length)
            else:  # a corpus snippet
                s = int(rng.integers(0, len(self.corpus) - length))
                seq = self.corpus[s : s + length]
            out += list(seq) + list(seq) + [self.eot]
        return np.array(out[:n])
