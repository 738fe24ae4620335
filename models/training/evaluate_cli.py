"""Evaluate the shipped model through the product itself (`casegraph classify`) on the
validation splits of train.py, so that tokenizer, n-gram features and calibration of the
Rust side are what is measured.

    cargo build --release && python models/training/evaluate_cli.py [--bin target/release/casegraph] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(train.ROOT / "target" / "release" / "casegraph"))
    ap.add_argument("--model", default="", help="model directory (default: the shipped one)")
    args = ap.parse_args()
    model = ["--model", args.model] if args.model else []
    data = train.load_data(random.Random(train.SEED))
    data.pop("_labels")
    report = {}
    for split in ("val_en", "val_de", "val_ocr", "val_ocr_de", "val_oos", "val_neg"):
        rows = data[split]
        channel = "letter" if "ocr" in split else "chat"
        inp = "".join(json.dumps({"text": t, "channel": channel}) + "\n" for t, _, _ in rows)
        t0 = time.time()
        out = subprocess.run([args.bin, "classify", "--input", "-", "--threads", "2", "--batch", "32", *model],
                             input=inp, capture_output=True, text=True, check=True)
        secs = time.time() - t0
        preds = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(preds) == len(rows)
        if split in ("val_oos", "val_neg"):
            flagged = sum(p["out_of_scope"] for p in preds) / len(preds)
            report[split] = {"n": len(rows), "flagged_out_of_scope": round(flagged, 4)}
        else:
            correct = sum(p["intent"] == c for p, (_, c, _) in zip(preds, rows)) / len(rows)
            kept = sum(p["intent"] == c and not p["out_of_scope"] for p, (_, c, _) in zip(preds, rows)) / len(rows)
            lang = {}
            for p in preds:
                lang[p["language"]] = lang.get(p["language"], 0) + 1
            report[split] = {"n": len(rows), "accuracy": round(correct, 4), "correct_and_unflagged": round(kept, 4), "languages": lang}
        report[split]["requests_per_s"] = round(len(rows) / secs, 1)
        print(split, report[split], flush=True)
    (HERE / "metrics_cli.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
