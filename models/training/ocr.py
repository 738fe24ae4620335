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


def noise(text: str, rng: random.Random, rate: float = 0.06) -> str:
    """Return `text` with OCR-like errors; `rate` is the share of characters touched."""
    out: list[str] = []
    i = 0
    while i < len(text):
        two = text[i : i + 2]
        if two in CONFUSIONS and rng.random() < rate:
            out.append(rng.choice(CONFUSIONS[two]))
            i += 2
            continue
        ch = text[i]
        r = rng.random()
        if ch in CONFUSIONS and r < rate:
            out.append(rng.choice(CONFUSIONS[ch]))
        elif ch == " " and r < rate * 0.5:
            pass  # lost space
        elif ch == " " and r < rate * 0.8:
            out.append("  ")
        elif ch.isalpha() and r < rate * 0.15:
            pass  # dropped glyph
        elif ch.isalpha() and r < rate * 0.3 and i + 3 < len(text) and text[i + 1].isalpha():
            out.append(ch + "-\n")  # hyphenated line break left in
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def train_noise(text: str, rng: random.Random, lo: float = 0.02, hi: float = 0.10) -> str:
    """Training augmentation: `noise` at a rate drawn from [lo, hi], then a second pass of
    the errors `noise` does not make (more glyph confusions, a space inside a word, stray
    specks read as punctuation, upper/lower case slips) at a third of that rate."""
    rate = rng.uniform(lo, hi)
    text = noise(text, rng, rate)
    r2 = rate / 3
    out: list[str] = []
    i = 0
    while i < len(text):
        two = text[i : i + 2]
        if two in MORE_CONFUSIONS and rng.random() < r2:
            out.append(rng.choice(MORE_CONFUSIONS[two]))
            i += 2
            continue
        ch = text[i]
        r = rng.random()
        if ch in MORE_CONFUSIONS and r < r2:
            out.append(rng.choice(MORE_CONFUSIONS[ch]))
        elif ch.isalpha() and r < r2 * 1.3 and i + 2 < len(text) and text[i + 1].isalpha():
            out.append(ch + " ")  # word split by a space
        elif ch.isalpha() and r < r2 * 1.6:
            out.append(ch.swapcase())
        elif ch == " " and r < r2 * 2:
            out.append(rng.choice([" . ", " ' ", ", ", " ,", " - "]))  # speck read as a mark
        else:
            out.append(ch)
        i += 1
    return "".join(out)
