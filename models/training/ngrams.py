"""Character and word n-gram TF-IDF features: the lexical half of the intent model.

The analyzer is specified here and implemented identically in Rust
(engine/src/classify/ngrams.rs); the shipped `ngrams.json` holds the vocabulary and idf.

- the text is lower-cased and split on whitespace;
- character n-grams, n = 2..5, of each word padded with one space on either side;
- word unigrams and bigrams of the tokens matching `\\b\\w\\w+\\b`, marked with a leading \\x01;
- value = (1 + ln count) * idf, the vector L2-normalized.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

WORD = re.compile(r"\b\w\w+\b")
MARK = "\x01"


def analyze(text: str) -> list[str]:
    low = text.lower()
    grams: list[str] = []
    for w in low.split():
        chars = " " + w + " "
        for n in range(2, 6):
            if len(chars) < n:
                break
            grams += [chars[i : i + n] for i in range(len(chars) - n + 1)]
    toks = WORD.findall(low)
    grams += [MARK + t for t in toks]
    grams += [MARK + a + " " + b for a, b in zip(toks, toks[1:])]
    return grams


def fit(texts: list[str]) -> TfidfVectorizer:
    vec = TfidfVectorizer(analyzer=analyze, sublinear_tf=True, min_df=2, norm="l2", smooth_idf=True, dtype=np.float32)
    vec.fit(texts)
    return vec


def sparse_inputs(vec: TfidfVectorizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The model's `ngram_ids`, `ngram_values` inputs: [n, k] padded with (0, 0.0)."""
    X = vec.transform(texts).tocsr()
    k = max(1, int(np.diff(X.indptr).max()))
    ids = np.zeros((X.shape[0], k), np.int64)
    vals = np.zeros((X.shape[0], k), np.float32)
    for r in range(X.shape[0]):
        s, e = X.indptr[r], X.indptr[r + 1]
        ids[r, : e - s] = X.indices[s:e]
        vals[r, : e - s] = X.data[s:e]
    return ids, vals


def load(path: Path) -> TfidfVectorizer:
    """The vectorizer `save` wrote (vocabulary and idf as shipped), ready to transform."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    vec = TfidfVectorizer(analyzer=analyze, sublinear_tf=True, norm="l2", dtype=np.float32,
                          vocabulary={g: i for i, g in enumerate(doc["grams"])})
    vec.idf_ = np.array(doc["idf"], np.float32)
    return vec


def save(vec: TfidfVectorizer, path: Path) -> None:
    vocab = sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])
    doc = {
        "analyzer": "char 2-5 (space-padded words) + word 1-2 (\\x01-marked), lower-case, sublinear tf, l2",
        "grams": [g for g, _ in vocab],
        "idf": [round(float(x), 5) for x in vec.idf_],
    }
    path.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
