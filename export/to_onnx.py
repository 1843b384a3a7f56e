"""ONNX (tf2onnx) of the ids model, checked with onnxruntime.

Inputs `token_ids`, `segment_ids`, `padding_mask` (int32 [batch, sequence]), outputs
named as the Keras model's (`logits`, `probabilities`; QA `start_logits`,
`end_logits`). Both axes are dynamic and named `batch` and `sequence`. Tokenize with
the run's vocab.txt and the rules in `data.tasks` (or the SavedModel's `tokenize`
signature).
"""

from __future__ import annotations

import os
import warnings

from keras_bert_lite.errors import KblError
from keras_bert_lite.export import manifest
from keras_bert_lite.export.signatures import ID_INPUTS, ids_call
from keras_bert_lite.export.source import ExportSource, as_source

OPSET = 17
FILE_NAME = "model.onnx"


def _tf2onnx():
    try:
        import tf2onnx
    except ImportError:
        raise KblError(
            "ONNX export needs tf2onnx and onnx: `pip install tf2onnx==1.17.0 "
            "onnxruntime==1.31.1`"
        ) from None
    try:  # tf2onnx 1.17 still calls NumPy 1 names; Keras ships the shim.
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:
        return tf2onnx
    with warnings.catch_warnings():  # the shim's own probe of np.object warns
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()
    return tf2onnx


def _erfc(ctx, node, name, args):
    """Erfc (exact GELU: 0.5 x erfc(-x / sqrt 2)) as 1 - Erf: ONNX has no Erfc
    and tf2onnx has no rule for it. The Keras model is left as it trained."""
    import numpy as np
    from tf2onnx import utils

    x = node.input[0]
    dtype = ctx.get_dtype(x)
    erf = ctx.make_node(
        "Erf", [x], shapes=[ctx.get_shape(x)], dtypes=[dtype], op_name_scope=name
    )
    one = ctx.make_const(
        utils.make_name(f"{name}_one"),
        np.array(1, utils.map_onnx_to_numpy_type(dtype)),
    )
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def convert(source: ExportSource, opset: int = OPSET):
    """The ONNX ModelProto of a run's ids model, axes named batch and sequence."""
    import tensorflow as tf

    tf2onnx = _tf2onnx()
    specs = [tf.TensorSpec([None, None], tf.int32, name=n) for n in ID_INPUTS]
    function = tf.function(ids_call(source), input_signature=specs, autograph=False)
    model_proto, _ = tf2onnx.convert.from_function(
        function,
        input_signature=specs,
        opset=opset,
        custom_op_handlers={"Erfc": (_erfc, [])},
    )
    # tf2onnx names unknown dimensions unk__N; give them the names users expect.
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if not dim.HasField("dim_value"):
                dim.dim_param = ("batch", "sequence", "labels")[min(axis, 2)]
    return model_proto


def onnx(run: str | ExportSource, out: str, opset: int = OPSET) -> str:
    """Writes a fine-tuned run's ids model as ONNX and checks it loads in
    onnxruntime.

    Args:
        run: the run directory (or an `ExportSource` already read).
        out: the .onnx file, or a directory (then model.onnx inside it); recorded in
            the directory's export.json.
        opset: the ONNX opset.

    Returns:
        The path written.
    """
    import onnx as onnx_lib

    source = as_source(run)
    path, directory = manifest.target(out, ".onnx", FILE_NAME)
    model_proto = convert(source, opset)
    onnx_lib.checker.check_model(model_proto)
    from keras_bert_lite.io import atomic_path

    with atomic_path(path, suffix=".onnx") as tmp:
        onnx_lib.save(model_proto, tmp)
        session(tmp)  # fails here, before the rename, if onnxruntime cannot run it
    manifest.record(
        directory,
        source,
        {
            "name": "onnx",
            "format": "onnx",
            "path": os.path.relpath(path, directory),
            "inputs": "ids",
            "opset": opset,
        },
    )
    return path


def session(path: str, num_threads: int | None = None):
    """An onnxruntime CPU session for `path` (`num_threads` per op and between
    ops; None: onnxruntime's default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise KblError(
            "running ONNX models needs onnxruntime: `pip install onnxruntime==1.31.1`"
        ) from None
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = num_threads
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise KblError(f"{path}: onnxruntime cannot load it ({e})") from None
