"""TFLite/LiteRT: one file that takes raw text, and an ids-only variant.

The raw-text model carries the run's tokenizer: FastBertTokenizer lowers to the
tensorflow-text custom ops FastBertNormalize and FastWordpieceTokenizeWithOffsets,
which LiteRT runs once they are registered:

    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    import tensorflow_text
    interpreter = InterpreterWithCustomOps(
        custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS,
        model_path="model.tflite")
    runner = interpreter.get_signature_runner()
    runner(text=np.array(["a review"], dtype=object))["probabilities"]

Everything after tokenization (packing, the encoder, the head) lowers to TFLite
builtins; no TF select ops are used. A tagger's or QA model's file cuts a long text
into the run's overlapping windows and runs the model on all of them in one call
(`text_graph.Windows`); what needs string ops or loops TFLite lacks (word-by-word
tokenization, Viterbi, cutting out the answer) is the app's: `kbl predict` does it
in Python from the file's per-piece or per-window outputs (`_text_function`).

Quantization: "none" (float32), "float16" (float16 weights), "dynamic" (int8
weights, float activations) and "int8" (int8 weights and activations calibrated on
the run's training texts; ops without int8 kernels, the tokenizer included, stay
float). The int8 trace masks attention padding with a finite floor instead of Keras'
-2.4e38, which would otherwise take the whole int8 range of the attention logits
(see `_int8_attention_mask`), and a QA model's padding logits likewise (`_outputs`).

Weights are frozen into the file: left as variables, Keras 3 weights became resource
variables that nothing initializes in the .tflite file, and LiteRT returned NaN.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from keras_bert_lite.errors import KblError
from keras_bert_lite.export import manifest
from keras_bert_lite.export.signatures import ID_INPUTS, ids_call, with_parameters
from keras_bert_lite.export.source import ExportSource, as_source
from keras_bert_lite.native_log import native_stderr

QUANTIZE = ("none", "float16", "dynamic", "int8")
CALIBRATION_SIZE = 200  # representative records for full int8


def file_name(quantize: str = "none", ids_only: bool = False) -> str:
    """The file name `export_all` uses: model.tflite, model.float16.tflite, ...,
    model_ids.tflite."""
    stem = "model_ids" if ids_only else "model"
    return f"{stem}.tflite" if quantize == "none" else f"{stem}.{quantize}.tflite"


def _text_function(source: ExportSource, int8: bool = False):
    """tf.function: raw strings [B] -> the task's outputs and `token_ids` [B, T]
    (T = seq_len); `int8`: traced for full int8 (`_outputs`).

    A tagger's are those of every window of a text (seq_len - 2 pieces, half a
    window apart), each piece read from the window where it has the most context:
    `text_probabilities` [B, P, K] for every piece of the text (P = the longest
    text's pieces), `text_piece_begin`/`text_piece_end` [B, P] their UTF-8 byte
    spans (-1 past a text's pieces) and `windows` [B]; beside them the first
    window's `logits`, `probabilities`, `token_ids`, `piece_begin`, `piece_end`.

    A QA model's are those of every window of the context (as the run windows it:
    the question's first max_query_len pieces, the context doc_stride apart), R in
    the batch: `window_start_logits`, `window_end_logits` [R, T], the context
    pieces' UTF-8 byte spans `window_piece_begin`/`window_piece_end` [R, T] (-1
    elsewhere), `window_max_context` bool [R, T] (the pieces whose most-context
    window this is), `window_question` [R] (the question's index in the batch)
    and `windows` [B]; beside them the first window's `start_logits`,
    `end_logits`, `token_ids`, `piece_begin`, `piece_end`.
    """
    import tensorflow as tf

    from keras_bert_lite.export import text_graph

    tokenizer, seq_len = source.tokenizer, source.seq_len
    run_model = _outputs(source, int8)

    def classified(features):
        result = run_model(features)
        # Classifiers pack to the batch's longest row (fit=True): the same
        # probabilities, several times faster for short texts. `token_ids` keeps
        # its documented [B, seq_len] shape.
        result["token_ids"] = text_graph.pad_positions(features["token_ids"], seq_len)
        return result

    def first_window(windows, outputs):
        """Each text's first window of the model's per-window `outputs`, with its
        `token_ids`: what the files gave before they read every window."""
        first = {k: tf.gather(v, windows.first_row) for k, v in outputs.items()}
        first["token_ids"] = tf.gather(windows.features["token_ids"], windows.first_row)
        return first

    if source.task == "qa":
        max_query_len = int(source.options.get("max_query_len", 64))
        doc_stride = int(source.options.get("doc_stride", 128))

        def call(question, context):
            # Every window of the context, as the run windows it; the app (kbl
            # predict in Python) chooses the answer as the run does.
            windows = text_graph.QuestionWindows(
                tokenizer,
                question,
                context,
                seq_len,
                doc_stride,
                max_query_len,
                "bytes",
            )
            logits = run_model(windows.features)
            piece_begin, piece_end = windows.first_window_bytes()
            return {
                # The first window's, as before: [B, T].
                **first_window(windows, logits),
                "piece_begin": piece_begin,
                "piece_end": piece_end,
                # Every window: [R, T], and each window's question [R].
                **{f"window_{k}": v for k, v in logits.items()},
                "window_piece_begin": windows.piece_begin,
                "window_piece_end": windows.piece_end,
                "window_max_context": windows.max_context,
                "window_question": windows.text,
                "windows": windows.count,  # [B]
            }

    elif source.pair:

        def call(text, text_pair):
            features = text_graph.encode_pair(
                tokenizer, text, text_pair, seq_len, fit=True
            )
            return classified(features)

    elif source.task == "tag":

        def call(text):
            # Every window of the text, as the run windows a long sentence; each
            # piece read from the window where it has the most context. The text
            # is tokenized whole (the run's per-word tokenization needs string ops
            # that TFLite lacks); Viterbi over the words is left to the app.
            pieces = text_graph.Pieces(tokenizer, text, offsets=True)
            windows = text_graph.TextWindows(pieces, seq_len)
            per_window = run_model(windows.features)
            begin, end = windows.piece_bytes()  # [B, P]
            return {
                # The first window's, as before: [B, T] and [B, T, K].
                **first_window(windows, per_window),
                "piece_begin": windows.first_window(begin, -1),
                "piece_end": windows.first_window(end, -1),
                # Every piece of the text: [B, P, K] and [B, P].
                "text_probabilities": windows.per_piece(per_window["probabilities"]),
                "text_piece_begin": begin,
                "text_piece_end": end,
                "windows": windows.count,  # [B]
            }

    else:

        def call(text):
            features = text_graph.encode_single(tokenizer, text, seq_len, fit=True)
            return classified(features)

    specs = [tf.TensorSpec([None], tf.string, name=n) for n in source.text_inputs]
    return tf.function(call, input_signature=specs, autograph=False)


def _ids_function(source: ExportSource, int8: bool = False):
    """tf.function: the three int32 [B, T] id inputs -> the model's outputs;
    `int8`: traced for full int8 (`_outputs`)."""
    import tensorflow as tf

    # The sequence axis is fixed at seq_len (apps pad to it, as training does): with
    # both axes dynamic the converter cannot lower the attention's 5-D slices.
    specs = [tf.TensorSpec([None, source.seq_len], tf.int32, name=n) for n in ID_INPUTS]
    run_model = _outputs(source, int8)

    def call(token_ids, segment_ids, padding_mask):
        ids = (token_ids, segment_ids, padding_mask)
        return run_model(dict(zip(ID_INPUTS, ids, strict=True)))

    return tf.function(call, input_signature=specs, autograph=False)


# In full int8 models, a QA model's padding logits sit this far below the row's
# smallest logit.
INT8_SPAN_MARGIN = 1.0


def _outputs(source: ExportSource, int8: bool):
    """features (the three int32 [B, T] id inputs) -> the Keras model's outputs in
    float32 (`source.output_names`).

    For full int8 a QA model's padding positions get `row minimum - 1` instead of
    the model's -1e9: one int8 scale spans each output tensor, and with -1e9 inside
    its range every real logit rounded to 0 (measured on a tiny MSRA QA model: all
    its start and end logits 0, no answer right). Padding still ranks below every
    real position, and the decoding reads context pieces only.
    """
    import tensorflow as tf

    model = source.model
    if int8 and source.task == "qa":

        def spans(features):
            inputs = {k: features[k] for k in ID_INPUTS}
            sequence = model.backbone(inputs, training=False)["sequence_output"]
            logits = tf.cast(model.span_dense(sequence), tf.float32)  # [B, T, 2]
            floor = tf.reduce_min(logits, axis=1, keepdims=True) - INT8_SPAN_MARGIN
            real = tf.expand_dims(features["padding_mask"] > 0, -1)
            start, end = tf.unstack(tf.where(real, logits, floor), axis=-1)
            return {"start_logits": start, "end_logits": end}

        return spans

    call = ids_call(source)
    return lambda features: call(*(features[k] for k in ID_INPUTS))


def _representative_records(source: ExportSource, representative) -> list[dict]:
    """Calibration records: given ones, a file (the task's format, or a .txt of one
    text per line), or a seeded sample of the run's training file."""
    from keras_bert_lite.data import tasks

    if representative is None:
        if not source.train_file or not os.path.exists(source.train_file):
            raise KblError(
                f"int8 quantization calibrates on the run's training file "
                f"({source.train_file}), which is missing (the run was moved?); give "
                "texts like the ones the model will see: kbl export --calibration "
                "FILE, or representative= in Python"
            )
        representative = source.train_file
    if isinstance(representative, str):
        plain = str(representative).removesuffix(".gz").endswith(".txt")
        if plain and source.task != "qa":
            records = [{"text": t} for t in tasks.read_texts(representative)]
        elif source.task == "qa":
            examples = tasks.read_squad(representative, require_answers=False)
            records = [{"question": e.question, "context": e.context} for e in examples]
        elif source.task == "tag":
            records = [
                {"text": " ".join(w)}
                for w, _ in tasks.read_conll(representative, require_tags=False)
            ]
        else:
            records = tasks.read_classification(representative, require_labels=False)
    else:
        records = [
            {"text": r} if isinstance(r, str) else dict(r) for r in representative
        ]
    if not records:
        raise KblError("int8 quantization needs at least one representative record")
    if len(records) > CALIBRATION_SIZE:
        keep = np.random.default_rng(0).choice(len(records), CALIBRATION_SIZE, False)
        records = [records[i] for i in sorted(keep)]
    return records


def _text_columns(source: ExportSource, records: Sequence[dict]) -> list[list[str]]:
    """The raw-text inputs of `records`, one list per model input."""
    if source.task == "qa":
        keys = ("question", "context")
    elif source.pair:
        keys = ("text_a", "text_b")
    else:
        keys = ("text",)
    try:
        return [[r[k] for r in records] for k in keys]
    except KeyError as e:
        raise KblError(
            f"representative records need the field {e.args[0]!r} ({', '.join(keys)})"
        ) from None


def _calibration(source: ExportSource, representative, ids_only: bool):
    """A representative_dataset generator: one record at a time (batch 1), as a
    dict keyed by the signature's input names."""
    records = _representative_records(source, representative)
    columns = _text_columns(source, records)
    if ids_only:
        from keras_bert_lite.export.to_saved_model import build_functions

        tokenize = build_functions(source)["tokenize"]

        def generate() -> Iterable[dict[str, Any]]:
            for row in zip(*columns, strict=True):
                features = tokenize(*[np.array([t], dtype=object) for t in row])
                yield {k: features[k].numpy() for k in ID_INPUTS}

    else:
        # Fixed-width bytes (numpy "S"), not object arrays: the converter's
        # calibrator reads object arrays of strings wrongly. Fed them, it calibrated
        # on texts other than those given (the file changed from one conversion of
        # the same run to the next, and with the records' order).
        def generate() -> Iterable[dict[str, Any]]:
            for row in zip(*columns, strict=True):
                yield {
                    name: np.array([text.encode("utf-8")], dtype=np.bytes_)
                    for name, text in zip(source.text_inputs, row, strict=True)
                }

    return generate


# Padded keys sit this far below a row's smallest attention logit in int8 models.
INT8_MASK_MARGIN = 20.0


@contextlib.contextmanager
def _int8_attention_mask():
    """While tracing for full int8: padded attention keys get `row minimum - 20`
    instead of Keras' -2.4e38.

    Quantization gives the masked logits one int8 scale; with -2.4e38 inside its
    range every real logit rounds to the same value (scale ~1e36) and attention
    turns uniform: measured on a fine-tuned mini model, int8 macro-F1 fell from 0.64
    to 0.48. A floor just below the row keeps the range that of the real logits,
    and a padded key still weighs at most e^-20 of the smallest real one. Only this
    trace changes; the Keras model and the float exports keep Keras' masking.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn as backend_nn

    keras_masks = backend_nn._apply_masks

    def int8_masks(logits, mask, is_causal):
        if mask is None or is_causal:
            return keras_masks(logits, mask, is_causal)
        floor = tf.reduce_min(logits, axis=-1, keepdims=True) - INT8_MASK_MARGIN
        return tf.where(mask, logits, floor)

    backend_nn._apply_masks = int8_masks
    try:
        yield
    finally:
        backend_nn._apply_masks = keras_masks


def convert(
    source: ExportSource,
    quantize: str = "none",
    representative=None,
    ids_only: bool = False,
) -> bytes:
    """The .tflite flatbuffer of a run (see `tflite`)."""
    import tensorflow as tf
    import tensorflow_text

    if quantize not in QUANTIZE:
        raise KblError(
            f"unknown quantization {quantize!r}: choose one of {', '.join(QUANTIZE)}"
        )
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    int8 = quantize == "int8"
    function = (_ids_function if ids_only else _text_function)(source, int8)
    with _int8_attention_mask() if int8 else contextlib.nullcontext():
        concrete = function.get_concrete_function()
    # Weights become constants before conversion. Left as captured variables, Keras 3
    # weights reach the .tflite file as resource variables that nothing initializes:
    # LiteRT then reads garbage and the logits come out NaN while TF's are finite.
    frozen = convert_variables_to_constants_v2(concrete)
    # Freezing flattens the outputs to a list (a dict flattens in key order); name
    # them again, and the inputs, for the .tflite signature.
    keys = sorted(concrete.structured_outputs)

    def named(*args):
        return dict(zip(keys, frozen(*args), strict=True))

    specs = function.input_signature
    signature = tf.function(
        with_parameters(named, [spec.name for spec in specs]),
        input_signature=specs,
        autograph=False,
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [signature.get_concrete_function()], tf.Module()
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if not ids_only:
        # The tokenizer's ops become custom ops that tensorflow-text registers.
        converter.allow_custom_ops = True
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.representative_dataset = _calibration(
            source, representative, ids_only
        )
        # Calibration runs the model, tokenizer included, in the converter's own
        # interpreter, which needs the tensorflow-text kernels too.
        converter.target_spec._experimental_custom_op_registerers = list(
            tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS
        )
    try:
        with warnings.catch_warnings(), native_stderr():
            # int8 calibration runs TF's own (deprecated) tf.lite.Interpreter.
            warnings.filterwarnings("ignore", "(?s).*tf.lite.Interpreter is deprecated")
            flatbuffer = converter.convert()
    except Exception as e:  # the converter raises assorted internal errors
        raise KblError(
            f"{source.run}: TFLite conversion ({quantize}) failed: {_reason(e)}"
        ) from e
    _check_runs(flatbuffer, source, ids_only, quantize)
    return flatbuffer


def _check_runs(flatbuffer: bytes, source: ExportSource, ids_only: bool, quantize):
    """Runs the converted model once in LiteRT with the tensorflow-text kernels.

    `allow_custom_ops` lets the converter turn *any* op it cannot lower into a custom
    op, which then fails only on a device; running it here catches that, and NaN.
    """
    if ids_only:
        row = np.zeros((1, source.seq_len), np.int32)
        row[0, :2] = (2, 3)  # [CLS] [SEP]
        inputs = {"token_ids": row, "segment_ids": 0 * row, "padding_mask": row > 0}
        inputs["padding_mask"] = inputs["padding_mask"].astype(np.int32)
    else:
        inputs = {
            name: np.array(["A short check, with ünïcödé 和中文."], dtype=object)
            for name in source.text_inputs
        }
    try:
        outputs = _litert(model_content=flatbuffer).get_signature_runner()(**inputs)
    except (RuntimeError, ValueError) as e:
        raise KblError(
            f"{source.run}: the converted TFLite model ({quantize}) does not run in "
            f"LiteRT: {str(e).strip().splitlines()[0]}"
        ) from None
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise KblError(
                f"{source.run}: the converted TFLite model ({quantize}) gives "
                f"non-finite {name}"
            )


def _reason(error: Exception) -> str:
    """The converter's first `error:` line (its messages run to pages of MLIR)."""
    for line in str(error).splitlines():
        if "error: " in line:
            return line.split("error: ", 1)[1].strip()
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def tflite(
    run: str | ExportSource,
    out: str,
    quantize: str = "none",
    representative=None,
    ids_only: bool = False,
) -> str:
    """Writes a fine-tuned run as a .tflite file.

    Args:
        run: the run directory (or an `ExportSource` already read).
        out: the .tflite file to write, or a directory (then `file_name(quantize,
            ids_only)` inside it); recorded in the directory's export.json.
        quantize: "none", "float16", "dynamic" or "int8".
        representative: for "int8", the calibration data: a task file, a list of
            texts or of records; default: up to 200 records of the run's training
            file (config.json train_file).
        ids_only: the variant without tokenizer: inputs `token_ids`, `segment_ids`,
            `padding_mask` (int32 [batch, seq]), outputs the model's.

    Returns:
        The path written.
    """
    source = as_source(run)
    path, directory = manifest.target(out, ".tflite", file_name(quantize, ids_only))
    flatbuffer = convert(source, quantize, representative, ids_only)
    from keras_bert_lite.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
    name = "tflite" + ("_ids" if ids_only else "")
    if quantize != "none":
        name += f"_{quantize}"
    entry = {
        "name": name,
        "format": "tflite",
        "path": os.path.relpath(path, directory),
        "inputs": "ids" if ids_only else "text",
        "quantize": quantize,
    }
    if quantize == "int8":  # what the scales were calibrated on
        if representative is None:
            entry["calibration"] = source.train_file
        elif isinstance(representative, str):
            entry["calibration"] = os.path.abspath(representative)
        else:
            entry["calibration"] = f"{len(list(representative))} records given"
    manifest.record(directory, source, entry)
    return path


def interpreter(path: str, num_threads: int | None = None):
    """A LiteRT interpreter for `path` with the tensorflow-text kernels registered."""
    if not os.path.exists(path):
        raise KblError(f"{path}: file not found")
    try:
        return _litert(model_path=path, num_threads=num_threads)
    except (ValueError, RuntimeError) as e:
        raise KblError(f"{path}: LiteRT cannot load it ({e})") from None


def _litert(**model):
    """A LiteRT interpreter with the tensorflow-text kernels registered, its
    tensors allocated: `model_path=` or `model_content=` (and `num_threads=`).

    Allocating builds the CPU delegate (and prints that it did, which
    `native_stderr` keeps off the terminal): here, rather than in the caller's
    first, perhaps timed, run."""
    import tensorflow_text
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    with native_stderr():
        loaded = InterpreterWithCustomOps(
            custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS,
            **model,
        )
        loaded.allocate_tensors()
    return loaded
