"""The lexical cascade: the n-gram half of the model decides alone where it is sure.

The n-gram head (TF-IDF features, logistic regression) costs microseconds; the encoder
costs milliseconds. When the n-gram head's own probability for its best class is at or
above `lexical_exit`, the engine answers with it and never runs the encoder. The threshold
is the lowest one at which, on every validation split (English, German, OCR-noised English
and German), accuracy is not lower than the full model's, and off-topic requests are still
flagged as often within half a point.

The head's weights ship as `ngram_head.bin`: float16 [grams, labels] row-major, then
float32 [labels] bias, little-endian; the same numbers the graph's `ngram_w`/`ngram_b` hold.

    python models/training/cascade.py [--model DIR]

adds the cascade to an already trained model directory (the shipped one by default):
writes `ngram_head.bin`, chooses the threshold on validation through the shipped graph,
and rewrites the card's `[cascade]` section and checksums. `train.py` does the same for
every model it trains.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HEAD_FILE = "ngram_head.bin"
GRID = [round(0.80 + 0.01 * i, 2) for i in range(20)]
IN_SCOPE = ("val_en", "val_de", "val_ocr", "val_ocr_de")
NEGATIVES_SLACK = 0.005


def write_head(path: Path, w: np.ndarray, b: np.ndarray) -> None:
    """`ngram_head.bin` from the head's weights [grams, labels] and bias [labels]."""
    path.write_bytes(w.astype("<f2").tobytes() + b.astype("<f4").tobytes())


def shipped_head(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The head as the engine computes it: weights rounded to float16."""
    return w.astype(np.float16).astype(np.float32), b.astype(np.float32)


def decided(probs: np.ndarray, threshold: float, oos: int) -> np.ndarray:
    """The class the engine ends up with: `oos` when the best class is `oos` or the best
    intent is below the out-of-scope threshold, else the best intent."""
    q = probs.copy()
    q[:, oos] = -1
    best = q.argmax(1)
    flagged = (probs.argmax(1) == oos) | (q.max(1) < threshold)
    return np.where(flagged, oos, best)


def choose_exit(full: dict[str, np.ndarray], lexical: dict[str, np.ndarray], ys: dict[str, np.ndarray], threshold: float, oos: int) -> tuple[float | None, dict]:
    """The lowest threshold of GRID that costs no validation accuracy (see module doc).

    `full`: the full model's decided class per split (`decided`); `lexical`: the n-gram
    head's probabilities per split. Returns (threshold or None, report of every candidate).
    """
    report = {}
    chosen = None
    base = {k: float((full[k] == ys[k]).mean()) for k in IN_SCOPE}
    base_neg = float((full["val_neg"] == oos).mean())
    for tau in GRID:
        row = {}
        ok = True
        for k in (*IN_SCOPE, "val_neg"):
            lex = decided(lexical[k], threshold, oos)
            exits = lexical[k].max(1) >= tau
            pred = np.where(exits, lex, full[k])
            if k == "val_neg":
                score = float((pred == oos).mean())
                ok &= score >= base_neg - NEGATIVES_SLACK
            else:
                score = float((pred == ys[k]).mean())
                ok &= score >= base[k]
            row[k] = {"exit": round(float(exits.mean()), 4), "score": round(score, 4)}
        row["meets"] = bool(ok)
        report[f"{tau:.2f}"] = row
        if ok and chosen is None:
            chosen = tau
    report["full"] = {**{k: round(v, 4) for k, v in base.items()}, "val_neg_flagged": round(base_neg, 4)}
    return chosen, report


def card_section(tau: float | None, report: dict) -> list[str]:
    """The card's `[cascade]` lines (none when no threshold costs nothing)."""
    if tau is None:
        return []
    row = report[f"{tau:.2f}"]
    exits = ", ".join(f"{k} = {row[k]['exit']:.2f}" for k in (*IN_SCOPE, "val_neg"))
    return [
        "[cascade]",
        "# The n-gram half decides alone when its own probability is at least lexical_exit;",
        "# chosen on validation as the lowest that costs no accuracy (models/training/cascade.py).",
        f"lexical_exit = {tau:.2f}",
        f"validation_exit_share = {{ {exits} }}",
        "",
    ]


# --- adding the cascade to a trained model directory ---------------------------------

def _update_card(card: Path, section: list[str], head_sha: str) -> None:
    # the card keeps its version: the model's numbers are the ones train.py/sentiment.py made
    text = card.read_text()
    text = re.sub(r"\n\[cascade\]\n.*?\n\n", "\n", text, flags=re.S)
    text = re.sub(rf'^"{re.escape(HEAD_FILE)}" = ".*"\n', "", text, flags=re.M)
    text = text.replace("\n[files]\n", "\n" + "".join(line + "\n" for line in section) + "[files]\n", 1)
    text = re.sub(r"(\n\[files\]\n(?:.+\n)*)", lambda m: m.group(1) + f'"{HEAD_FILE}" = "{head_sha}"\n', text, count=1)
    card.write_text(text)


def main() -> None:
    import onnx
    import tomllib
    from onnx import numpy_helper
    from tokenizers import Tokenizer

    import engine
    import ngrams
    import pack
    import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(train.ROOT / "models" / "intent-e5-de-en"))
    args = ap.parse_args()
    model = Path(args.model)
    pack.unpack(model)
    card = tomllib.loads((model / "model.toml").read_text())
    labels = json.loads((model / "labels.json").read_text())
    oos = labels.index(card["model"]["out_of_scope_label"])
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model / "model.onnx")).graph.initializer if i.name in ("ngram_w", "ngram_b")}
    w, b = shipped_head(inits["ngram_w"], inits["ngram_b"])
    vec = ngrams.load(model / "ngrams.json")
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    sess = engine.session(str(model / "model.onnx"), threads=2)
    cal = card["calibration"]
    prefix, max_tokens = card["model"]["prefix"], card["model"]["max_tokens"]

    data = train.load_data(random.Random(train.SEED))
    lab_idx = {c: i for i, c in enumerate(labels)}
    full, lexical, ys = {}, {}, {}
    for k in (*IN_SCOPE, "val_neg"):
        rows = data[k]
        ys[k] = np.array([lab_idx[c] for _, c, _ in rows])
        texts = [t for t, _, _ in rows]
        logits = []
        for text in texts:
            ids = tok.encode(prefix + text).ids
            if len(ids) > max_tokens:
                ids = ids[: max_tokens - 1] + [ids[-1]]
            gi, gv = ngrams.sparse_inputs(vec, [text])
            a = np.array([ids], np.int64)
            feed = {"input_ids": a, "attention_mask": np.ones_like(a), "ngram_ids": gi, "ngram_values": gv}
            logits.append(sess.run(None, feed)[0][0])
        t = cal.get("temperature_by_language", {}).get("de", cal["temperature"]) if k in train.GERMAN_SPLITS else cal["temperature"]
        full[k] = decided(train.softmax(np.array(logits) / t), cal["out_of_scope_threshold"], oos)
        lexical[k] = train.softmax(np.asarray(vec.transform(texts) @ w) + b)
        print(k, len(rows), flush=True)
    tau, report = choose_exit(full, lexical, ys, cal["out_of_scope_threshold"], oos)
    print(json.dumps(report, indent=1), flush=True)
    write_head(model / HEAD_FILE, inits["ngram_w"], inits["ngram_b"])
    sha = hashlib.sha256((model / HEAD_FILE).read_bytes()).hexdigest()
    _update_card(model / "model.toml", card_section(tau, report), sha)
    pack.pack(model)
    print(f"lexical_exit = {tau}", flush=True)


if __name__ == "__main__":
    main()
