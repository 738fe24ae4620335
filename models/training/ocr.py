"""OCR-style noise for training and evaluation: the errors a scanner and text recognizer
make on printed letters (confused glyphs, lost or doubled spaces, words split by hyphenated
line breaks, dropped umlaut dots, stray punctuation)."""

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
