"""Print the evaluation tables of docs/model.md from metrics.json (train.py) and
metrics_cli.json (evaluate_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main() -> None:
    m = json.loads((HERE / "metrics.json").read_text())
    names = {"val_en": "English (BANKING77 held-out 10%)", "val_de": "German (team-written, held out)",
             "val_ocr": "English, OCR-noised", "val_ocr_de": "German, OCR-noised"}
    print("| split | n | accuracy | macro-F1 | encoder head only | n-gram head only |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, name in names.items():
        print(f"| {name} | {m[k]['n']} | {pct(m[k]['accuracy'])} | {pct(m[k]['macro_f1'])} | {pct(m['encoder_only'][k])} | {pct(m['ngram_only'][k])} |")
    print()
    print("| threshold | in-scope correct and unflagged (en+de) | off-topic flagged (CLINC val + German) | CLINC `oos` val flagged |")
    print("| --- | --- | --- | --- |")
    for c, o in zip(m["oos_curve"], m["clinc_oos_val_flagged"]):
        mark = " **(shipped)**" if c["threshold"] == m["oos_threshold"] else ""
        print(f"| {c['threshold']:.2f}{mark} | {pct(c['in_scope_correct_unflagged'])} | {pct(c['off_topic_flagged'])} | {pct(o['flagged'])} |")
    print()
    print(f"Temperature {m['temperature']:.3f}; expected calibration error (English validation) {m['ece_val_en']:.3f}.")
    print()
    print("| confidence | n | mean confidence | accuracy |")
    print("| --- | --- | --- | --- |")
    for b in m["reliability_val_en"]:
        print(f"| {b['bin']} | {b['n']} | {b['mean_confidence']:.3f} | {pct(b['accuracy'])} |")
    print()
    print("| true intent | predicted | n |")
    print("| --- | --- | --- |")
    for c in m["top_confusions_val_en"][:10]:
        print(f"| {c['true']} | {c['predicted']} | {c['n']} |")
    cli = HERE / "metrics_cli.json"
    if cli.exists():
        r = json.loads(cli.read_text())
        print()
        print("| split (through `casegraph classify`) | n | accuracy | correct and unflagged | flagged out-of-scope | requests/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for k, v in r.items():
            print(f"| {k} | {v['n']} | {pct(v['accuracy']) if 'accuracy' in v else ''} | {pct(v['correct_and_unflagged']) if 'correct_and_unflagged' in v else ''} | {pct(v['flagged_out_of_scope']) if 'flagged_out_of_scope' in v else ''} | {v['requests_per_s']} |")


if __name__ == "__main__":
    main()
