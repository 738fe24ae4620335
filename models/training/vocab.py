"""Prune the 250,002-piece SentencePiece vocabulary of multilingual-e5-small to the pieces
that German and English text uses, and write a consistent tokenizer.json.

Kept: the special pieces; every piece the full tokenizer produces for the training and
validation texts and for the German and English word lists of Debian's `wngerman` and
`wamerican` packages (each word as written, lower-case and capitalized); and every
single-character piece of Latin scripts, digits and common punctuation, with and without
the word-start marker, so that no Latin text falls back to <unk>.

For any text whose words are covered, the pruned tokenizer gives exactly the pieces of the
full one (the Viterbi optimum of the full vocabulary survives the pruning); other words are
spelled with the shorter pieces that remain.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

WORD_LISTS = [Path("/usr/share/dict/ngerman"), Path("/usr/share/dict/american-english")]
META = "\u2581"


def _latin(ch: str) -> bool:
    cp = ord(ch)
    return cp < 0x250 or 0x1E00 <= cp <= 0x1EFF or 0x2000 <= cp <= 0x206F or cp in (0x20AC, 0x2116)


def prune(full_path: Path, corpus: list[str], out_path: Path) -> tuple[np.ndarray, Tokenizer]:
    full = Tokenizer.from_file(str(full_path))
    spec = json.loads(full_path.read_text(encoding="utf-8"))
    pieces = [p for p, _ in spec["model"]["vocab"]]
    keep: set[int] = {0, 1, 2, 3, len(pieces) - 1}  # <s> <pad> </s> <unk> <mask>

    texts = list(corpus)
    for wl in WORD_LISTS:
        if not wl.exists():
            raise SystemExit(f"{wl} missing: apt-get install wngerman wamerican")
        for w in wl.read_text(encoding="utf-8", errors="ignore").split("\n"):
            w = w.strip()
            if w:
                texts += [w, w.lower(), w[:1].upper() + w[1:]]
    for enc in full.encode_batch(texts, add_special_tokens=False):
        keep.update(enc.ids)
    for i, p in enumerate(pieces):
        body = p[1:] if p.startswith(META) else p
        if len(body) <= 1 and all(_latin(c) for c in body):
            keep.add(i)
        elif body.isdigit() and len(body) <= 4:
            keep.add(i)

    keep_ids = np.array(sorted(keep), dtype=np.int64)
    remap = {int(o): n for n, o in enumerate(keep_ids)}
    new = copy.deepcopy(spec)
    new["model"]["vocab"] = [spec["model"]["vocab"][i] for i in keep_ids]
    new["model"]["unk_id"] = remap[spec["model"]["unk_id"]]
    for t in new["added_tokens"]:
        t["id"] = remap[t["id"]]
    for st in new["post_processor"]["special_tokens"].values():
        st["ids"] = [remap[i] for i in st["ids"]]
    out_path.write_text(json.dumps(new, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    tok = Tokenizer.from_file(str(out_path))
    # the pruned tokenizer must agree with the full one on the corpus
    same = 0
    for a, b in zip(full.encode_batch(corpus[:2000]), tok.encode_batch(corpus[:2000])):
        same += [remap.get(i, -1) for i in a.ids] == b.ids
    if same != min(len(corpus), 2000):
        raise SystemExit(f"pruned tokenizer disagrees on {min(len(corpus), 2000) - same} texts")
    return keep_ids, tok
