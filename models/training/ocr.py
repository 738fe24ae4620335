"""OCR-style noise for training and evaluation: the errors a scanner and text recognizer
make on printed letters (confused glyphs, lost or doubled spaces, words split by hyphenated
line breaks, dropped umlaut dots, stray punctuation).

`noise` is what the validation splits are made with; its output for a given seed must not
change, or the OCR numbers in docs/model.md stop being comparable. `train_noise` is the
augmentation of training text: a varying error rate per text and more kinds of errors, so
the heads do not learn one noise level's habits.
"""

from __future__ import annotations

import random

# glyph confusions seen in OCR output of printed Latin text
CONFUSIONS = {
    "m": ["rn"], "rn": ["m"], "l": ["1", "I"], "I": ["l", "1"], "i": ["l", "í"], "o": ["0"],
    "O": ["0"], "0": ["O"], "e": ["c"], "c": ["e"], "a": ["o"], "h": ["b"], "n": ["ri"],
    "u": ["ii"], "ü": ["u", "ii"], "ö": ["o"], "ä": ["a"], "ß": ["B", "ss"], "S": ["5"],
    "5": ["S"], "B": ["8"], "g": ["q"], "t": ["f"], "f": ["t"], "v": ["y"], "w": ["vv"],
    ",": ["."], ".": [","],
}

# further confusions for training only (validation keeps CONFUSIONS alone)
MORE_CONFUSIONS = {
    "cl": ["d"], "d": ["cl"], "li": ["h"], "h": ["li"], "ri": ["n"], "in": ["m"], "ni": ["m"],
    "k": ["lc"], "r": ["i"], "b": ["h", "6"], "s": ["5"], "Z": ["2"], "z": ["2"], "2": ["Z"],
    "1": ["l", "I"], "E": ["F"], "F": ["E"], "D": ["O"], "U": ["V"], "é": ["e"], "€": ["E", "C"],
    "ä": ["a", "ii"], "ö": ["o", "6"], "Ü": ["U"], "Ä": ["A"], "Ö": ["O"], "y": ["v"],
    "t": ["l"], "j": ["i"], "q": ["g"], "nn": ["m"], "ff": ["ft"], "fi": ["ti"],
}


def _scan(text: str, rng: random.Random, table: dict[str, list[str]], rate: float, other) -> str:
    """One pass over `text`: a glyph pair or glyph in `table` is confused at `rate`; any
    other character becomes `other(text, i, ch, r)` with its own draw `r` in [0, 1)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        two = text[i : i + 2]
        if two in table and rng.random() < rate:
            out.append(rng.choice(table[two]))
            i += 2
            continue
        ch = text[i]
        r = rng.random()
        if ch in table and r < rate:
            out.append(rng.choice(table[ch]))
        else:
            out.append(other(text, i, ch, r))
        i += 1
    return "".join(out)


def noise(text: str, rng: random.Random, rate: float = 0.06) -> str:
    """Return `text` with OCR-like errors; `rate` is the share of characters touched."""

    def other(text: str, i: int, ch: str, r: float) -> str:
        if ch == " " and r < rate * 0.5:
            return ""  # lost space
        if ch == " " and r < rate * 0.8:
            return "  "
        if ch.isalpha() and r < rate * 0.15:
            return ""  # dropped glyph
        if ch.isalpha() and r < rate * 0.3 and i + 3 < len(text) and text[i + 1].isalpha():
            return ch + "-\n"  # hyphenated line break left in
        return ch

    return _scan(text, rng, CONFUSIONS, rate, other)


def train_noise(text: str, rng: random.Random, lo: float = 0.02, hi: float = 0.10) -> str:
    """Training augmentation: `noise` at a rate drawn from [lo, hi], then a second pass of
    the errors `noise` does not make (more glyph confusions, a space inside a word, stray
    specks read as punctuation, upper/lower case slips) at a third of that rate."""
    rate = rng.uniform(lo, hi)
    text = noise(text, rng, rate)
    r2 = rate / 3

    def other(text: str, i: int, ch: str, r: float) -> str:
        if ch.isalpha() and r < r2 * 1.3 and i + 2 < len(text) and text[i + 1].isalpha():
            return ch + " "  # word split by a space
        if ch.isalpha() and r < r2 * 1.6:
            return ch.swapcase()
        if ch == " " and r < r2 * 2:
            return rng.choice([" . ", " ' ", ", ", " ,", " - "])  # speck read as a mark
        return ch

    return _scan(text, rng, MORE_CONFUSIONS, r2, other)
