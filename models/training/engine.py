"""ONNX Runtime sessions opened as the engine opens them (engine/src/classify/onnx.rs), so
that a script measuring the shipped graph measures what the box runs.

The int8 graph quantizes its activations per call, so a graph rewrite that only changes a
float's last bits can still move a logit: the engine leaves ONNX Runtime's SkipLayerNormalization
fusion out (ADR 0029) and so must every script whose figures go on the model card.
"""

from __future__ import annotations

import onnxruntime as ort

# The engine's DISABLED_OPTIMIZERS (engine/src/classify/onnx.rs; a test there checks that
# the two agree).
DISABLED_OPTIMIZERS = "SkipLayerNormFusion"


def session(model, threads: int = 1) -> ort.InferenceSession:
    """A CPU session over `model` (a path or the graph's bytes) as the engine opens one."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("optimization.disable_specified_optimizers", DISABLED_OPTIMIZERS)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
