#!/usr/bin/env python3
"""Labelled request sets for `casegraph run --report` (the banking pack's measurement).

The intent model never saw these requests: they are the model's own validation rows, drawn
exactly as models/training/train.py draws them (BANKING77 *train* split, 10 % per intent,
seed 20261123; the German rows of german.tsv after the fifth of each intent). Each set is
halved: `validation` is what routing thresholds are calibrated on, `holdout` what the
report is run on. Written to workflows/samples/banking/ as JSON lines (channel, language,
customer_id, text, fields, label):

- en-validation.jsonl / en-holdout.jsonl: English chat requests;
- de-validation.jsonl / de-holdout.jsonl: German requests in their own channel;
- letters-holdout.jsonl: the English hold-out as OCR'd letters (models/training/ocr.py
  `noise`, seed fixed);
- letters-validation.jsonl: the English validation half as OCR'd letters (its own seed),
  what the letter channel's thresholds are calibrated on.

    python3 scripts/banking_splits.py [../shared/data/banking77]
"""

import csv
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "training"))
from ocr import noise  # noqa: E402

BANKING = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "banking77"
OUT = ROOT / "workflows" / "samples" / "banking"


def line(channel, language, text, label, n):
    return {
        "channel": channel,
        "language": language,
        "customer_id": f"C-{1000000 + n:07d}",
        "text": text,
        "fields": {},
        "label": label,
    }


def write(name, rows):
    with open(OUT / name, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    # The model's validation split (models/training/train.py `load_data`).
    rng = random.Random(20261123)
    labels = json.load(open(BANKING / "categories.json", encoding="utf-8"))
    by_label = {c: [] for c in labels}
    with open(BANKING / "train.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_label[row["category"]].append(row["text"])
    val = []
    for c in labels:
        texts = sorted(by_label[c])
        rng.shuffle(texts)
        k = max(1, round(len(texts) * 0.1))
        val += [(t.strip(), c) for t in texts[:k]]
    validation = [v for n, v in enumerate(val) if n % 2 == 0]
    holdout = [v for n, v in enumerate(val) if n % 2 == 1]
    write("en-validation.jsonl", [line("chat", "en", t, i, n) for n, (t, i) in enumerate(validation)])
    write("en-holdout.jsonl", [line("chat", "en", t, i, n) for n, (t, i) in enumerate(holdout)])
    ocr = random.Random(1919)
    write(
        "letters-holdout.jsonl",
        [line("letter", "en", noise(t, ocr), i, n) for n, (t, i) in enumerate(holdout)],
    )
    ocr_validation = random.Random(1920)
    write(
        "letters-validation.jsonl",
        [line("letter", "en", noise(t, ocr_validation), i, n) for n, (t, i) in enumerate(validation)],
    )
    german, seen = [], {}
    with open(ROOT / "models" / "training" / "data" / "german.tsv", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            n = seen.get(r["intent"], 0)
            seen[r["intent"]] = n + 1
            if n >= 5:
                german.append((r["text"], r["intent"], r["style"]))
    write("de-validation.jsonl", [line(s, "de", t, i, n) for n, (t, i, s) in enumerate(german) if n % 2 == 0])
    write("de-holdout.jsonl", [line(s, "de", t, i, n) for n, (t, i, s) in enumerate(german) if n % 2 == 1])


if __name__ == "__main__":
    main()
