"""SavedModel for TF Serving: raw text in, task outputs out.

    OUT/saved_model/VERSION/       raw text + ids (needs the tensorflow-text ops)
    OUT/saved_model_ids/VERSION/   ids only (any TF Serving build)
    each with saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests

Signatures of the raw-text model:
- `serving_default`: raw strings (`text` [+ `text_pair`]; QA `question`, `context`),
  the run's tokenizer inside (tensorflow-text ops), task outputs ready to use:
  classification `label`, `probabilities`, `labels` (+ `predicted` for multi-label;
  `value` for regression); tagging the run's entities (`entity_type`,
  `entity_text`, character `entity_start`/`entity_end`, [B, E] padded with "" and
  -1) and each word's tag (`word_tags`, `word_spans`), from every window of a text
  and decoded in the graph as the run decodes (`text_graph.TextWindows`, `tag_graph`),
  beside the first window's per-piece `tag_ids`, `tags` (each piece's most
  probable), `probabilities`, character offsets and `word_start` (each word's
  first piece, whose tag is the word's); QA the run's `answer` with
  character `start`/`end` and `score`, from every window of the context and
  decoded in the graph as the run decodes (`text_graph.QuestionWindows`,
  `qa_graph`), `windows` (how many), and the first window's `start_logits`,
  `end_logits`, `token_ids` and context pieces' UTF-8 `piece_begin`/`piece_end`.
- `ids`: `token_ids`, `segment_ids`, `padding_mask` int32 [batch, seq] -> the Keras
  model's outputs.
- `tokenize`: the raw-text inputs -> the three id inputs, exactly as training packs
  them (for clients that call `ids`, and for checks).

A graph that holds a tensorflow-text op anywhere does not load in a TensorFlow
without those ops (the graph importer checks every function), so the `ids`
signature alone is also written as a model of its own (`ids_only=True`), whose
`serving_default` and `ids` signatures stock TF Serving runs.

The graphs need only `tensorflow` (and `tensorflow_text` for the raw-text model);
no keras_bert_lite code is saved or imported.

B = batch, T = seq_len, K = labels, E = entities.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from keras_bert_lite.errors import KblError
from keras_bert_lite.export import manifest
from keras_bert_lite.export.signatures import ID_INPUTS, with_parameters
from keras_bert_lite.export.source import ExportSource, as_source

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_ANSWER_LEN = 30  # pieces, as `tasks.decode_squad`

# Generic requests: the artefact never carries the user's data.
_WARMUP_TEXT = {
    "text": ["A short warm-up request.", "Another one, a little longer: 2 of 8!"],
    "text_pair": ["A second segment.", "And its companion text."],
    "question": ["What is this?", "Who sent it?"],
    "context": ["This is a warm-up request.", "The model server sent it."],
}


def _text_specs(source: ExportSource):
    import tensorflow as tf

    return [tf.TensorSpec([None], tf.string, name=n) for n in source.text_inputs]


def _id_specs():
    import tensorflow as tf

    return [tf.TensorSpec([None, None], tf.int32, name=n) for n in ID_INPUTS]


def build_functions(source: ExportSource) -> dict[str, Callable]:
    """The plain Python functions behind the signatures: {"tokenize", "ids",
    "serving_default"}, each taking tensors positionally."""
    import tensorflow as tf

    from keras_bert_lite.export import qa_graph, tag_graph, text_graph

    model, tokenizer, seq_len = source.model, source.tokenizer, source.seq_len
    options = source.options
    names = tf.constant(source.labels or [""], tf.string)  # [K]

    def features_of(*texts, fit=False):
        if source.task == "qa":
            return text_graph.encode_question(
                tokenizer,
                texts[0],
                texts[1],
                seq_len,
                int(options.get("max_query_len", 64)),
            )
        if source.pair:
            return text_graph.encode_pair(tokenizer, texts[0], texts[1], seq_len, fit)
        return text_graph.encode_single(tokenizer, texts[0], seq_len, fit=fit)

    def run_model(features):
        outputs = model({k: features[k] for k in ID_INPUTS}, training=False)
        return {k: tf.cast(outputs[k], tf.float32) for k in source.output_names}

    def tokenize(*texts):
        features = features_of(*texts)
        return {k: features[k] for k in ID_INPUTS}

    def ids(token_ids, segment_ids, padding_mask):
        return run_model(
            {
                "token_ids": token_ids,
                "segment_ids": segment_ids,
                "padding_mask": padding_mask,
            }
        )

    def classify(*texts):
        # Packed to the batch's longest row: padding is masked, so the same
        # probabilities as at seq_len, and short texts cost a fraction of it.
        outputs = run_model(features_of(*texts, fit=True))
        probabilities = outputs["probabilities"]
        if source.label_kind == "regression":
            return {"value": tf.reshape(probabilities, [-1])}
        batch = tf.shape(probabilities)[0]
        result = {
            "probabilities": probabilities,  # [B, K]
            "logits": outputs["logits"],
            # Per row, so every output has the batch as its first axis (REST rows).
            "labels": tf.tile(names[None, :], [batch, 1]),  # [B, K]
            "label": tf.gather(names, tf.argmax(probabilities, -1, tf.int32)),
        }
        if source.label_kind == "multi_label":
            threshold = float(options.get("threshold", 0.5))
            result["predicted"] = probabilities >= threshold  # [B, K]
        return result

    decoding = source.decoding() if source.task == "tag" else {}
    crf = decoding.get("crf")
    if crf is not None:
        crf = tuple(np.asarray(crf[k]) for k in ("start", "transitions", "end"))

    def tag(text):
        # Every window of every text through the model, as the run windows a long
        # sentence; each piece read from the window where it has the most context.
        words = text_graph.WordPieces(tokenizer, text)
        windows = text_graph.TextWindows(words, seq_len)
        per_window = run_model(windows.features)["probabilities"]  # [R, T, K]
        per_piece = windows.per_piece(per_window)  # [B, P, K]
        start, end = windows.piece_spans(text)  # [B, P]
        # The run's words, tags and entities: what `kbl predict` gives for the run.
        # (`decode` takes the pieces at 1 .. n, as in a window.)
        decoded = tag_graph.decode(
            text,
            tf.pad(start, [[0, 0], [1, 0]], constant_values=-1),
            tf.pad(end, [[0, 0], [1, 0]], constant_values=-1),
            tf.pad(per_piece, [[0, 0], [1, 0], [0, 0]]),
            source.labels,
            decoding["scheme"],
            None,
            crf,
        )
        # The per-piece outputs: the first window's.
        token_ids = tf.gather(windows.features["token_ids"], windows.first_row)
        probabilities = tf.gather(per_window, windows.first_row)  # [B, T, K]
        first_start = windows.first_window(start, -1)  # [B, T]
        piece = first_start >= 0  # a piece of the text
        tag_ids = tf.where(piece, tf.argmax(probabilities, -1, tf.int32), -1)
        return {
            **decoded,
            "token_ids": token_ids,
            "tag_ids": tag_ids,
            "tags": tf.where(piece, tf.gather(names, tf.maximum(tag_ids, 0)), ""),
            "probabilities": probabilities,
            # The first piece of each of the run's words: a word's tag is the
            # tag of its first piece, as training labels it.
            "word_start": words.word_firsts(tf.range(seq_len)[None, :] - 1, piece),
            "start": first_start,
            "end": windows.first_window(end, -1),
        }

    def answer(question, context):
        # Every window of the context, as the run windows it, decoded as the run
        # decodes (`qa_graph`).
        stride = int(options.get("doc_stride", 128))
        query = int(options.get("max_query_len", 64))
        windows = text_graph.QuestionWindows(
            tokenizer, question, context, seq_len, stride, query
        )
        outputs = run_model(windows.features)
        start_logits, end_logits = outputs["start_logits"], outputs["end_logits"]
        answers = qa_graph.decode(
            context,
            windows,
            start_logits,
            end_logits,
            float(options.get("null_threshold", 0.0)),
            max_answer_len=MAX_ANSWER_LEN,
        )
        # The first window's logits and pieces, as the .tflite file gives them.
        first = windows.first_row
        piece_begin, piece_end = windows.first_window_bytes()
        return {
            **answers,
            "windows": windows.count,  # [B]: the windows the answer was chosen from
            "start_logits": tf.gather(start_logits, first),
            "end_logits": tf.gather(end_logits, first),
            "token_ids": tf.gather(windows.features["token_ids"], first),
            "piece_begin": piece_begin,
            "piece_end": piece_end,
        }

    serve = {"classify": classify, "tag": tag, "qa": answer}[source.task]
    return {"tokenize": tokenize, "ids": ids, "serving_default": serve}


def saved_model(
    run: str | ExportSource,
    out: str,
    *,
    name: str | None = None,
    version: int = 1,
    ids_only: bool = False,
    warmup: bool = True,
) -> str:
    """Writes a fine-tuned run as a SavedModel in TF Serving's layout.

    Args:
        run: the run directory (or an `ExportSource` already read).
        out: the export directory; the model goes to OUT/NAME/VERSION (replaced
            atomically when it exists) and is recorded in OUT/export.json.
        name: the model name (TF Serving's model_base_path is OUT/NAME); default
            "saved_model", or "saved_model_ids" with `ids_only`.
        version: the version folder.
        ids_only: write the model without tokenizer: signatures `serving_default`
            and `ids` on the three id inputs, no tensorflow-text op anywhere.
        warmup: write warm-up requests (generic text, never the user's data) for
            every signature in assets.extra/tf_serving_warmup_requests.

    Returns:
        The path of the version directory.
    """
    import keras

    source = as_source(run)
    if version < 0:
        raise KblError(f"version must be a whole number >= 0, got {version}")
    name = name or ("saved_model_ids" if ids_only else "saved_model")
    functions = build_functions(source)
    if ids_only:
        plan = {"serving_default": "ids", "ids": "ids"}
    else:
        plan = {
            "serving_default": "serving_default",
            "ids": "ids",
            "tokenize": "tokenize",
        }
    specs = {
        signature: _id_specs() if kind == "ids" else _text_specs(source)
        for signature, kind in plan.items()
    }
    archive = keras.export.ExportArchive()
    archive.track(source.model)
    for signature, kind in plan.items():
        archive.add_endpoint(
            signature,
            with_parameters(functions[kind], [spec.name for spec in specs[signature]]),
            input_signature=specs[signature],
        )

    final = os.path.join(out, name, str(version))
    with manifest.atomic_directory(final) as tmp:
        archive.write_out(tmp, verbose=False)
        if warmup:
            requests = [s for s in plan if s != "tokenize"]
            _write_warmup(
                os.path.join(tmp, WARMUP_FILE),
                source,
                name,
                functions["tokenize"],
                {s: plan[s] for s in requests},
            )
    manifest.record(
        out,
        source,
        {
            "name": "saved_model_ids" if ids_only else "saved_model",
            "format": "saved_model",
            "path": os.path.relpath(final, out),
            "inputs": "ids" if ids_only else "text",
            "signatures": {s: [spec.name for spec in specs[s]] for s in plan},
            "warmup": bool(warmup),
        },
    )
    return final


def _write_warmup(path, source, name, tokenize, signatures: dict) -> None:
    """TF Serving warm-up: a TFRecord file of PredictionLog protos, one request of
    batch 1 and one of batch 2 per signature ({signature: "ids" or raw text})."""
    import tensorflow as tf

    try:
        from tensorflow_serving.apis import (
            model_pb2,
            predict_pb2,
            prediction_log_pb2,
        )
    except ImportError:
        raise KblError(
            "writing TF Serving warm-up requests needs tensorflow-serving-api; "
            "install it with `pip install tensorflow-serving-api==2.21.0` (or pass "
            "warmup=False)"
        ) from None

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, kind in signatures.items():
            for batch in (1, 2):
                texts = [
                    tf.constant(_WARMUP_TEXT[key][:batch]) for key in source.text_inputs
                ]
                if kind == "ids":
                    inputs = tokenize(*texts)
                else:
                    inputs = dict(zip(source.text_inputs, texts, strict=True))
                request = predict_pb2.PredictRequest(
                    model_spec=model_pb2.ModelSpec(name=name, signature_name=signature)
                )
                for key, value in inputs.items():
                    request.inputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
                writer.write(log.SerializeToString())
