"""Predictions from an exported artefact, as `kbl predict` prints them for a run.

    kbl predict --model exports/sentiment/model.int8.tflite "A gripping film."
    kbl predict --model exports/sentiment/model.onnx "A gripping film."
    kbl predict --model exports/sentiment "A gripping film."   # the raw-text SavedModel

Raw-text artefacts (the SavedModel's `serving_default`, model*.tflite) tokenize
inside the file. Ids-only artefacts (model_ids.tflite, model.onnx, saved_model_ids)
are fed the ids of `tokenize` from the run recorded in export.json, packed as
training packs them. Labels come from export.json beside the artefact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from keras_bert_lite.data import tasks
from keras_bert_lite.errors import KblError
from keras_bert_lite.export.manifest import read_manifest
from keras_bert_lite.export.signatures import ID_INPUTS


def _locate(path: str) -> tuple[str, dict, dict]:
    """(artefact path, its export.json entry, the manifest) for a file, a SavedModel
    version directory, or an export directory (its raw-text SavedModel)."""
    path = os.path.normpath(path)
    if not os.path.exists(path):
        raise KblError(f"{path}: not found")
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "export.json")):
        manifest = read_manifest(path)
        entries = {e["name"]: e for e in manifest["formats"]}
        for name in ("saved_model", "tflite", "saved_model_ids", "onnx"):
            if name in entries:
                entry = entries[name]
                return os.path.join(path, entry["path"]), entry, manifest
        raise KblError(f"{path}/export.json lists no artefact to predict with")
    if os.path.isdir(path):  # OUT/NAME/VERSION of a SavedModel
        directory = os.path.dirname(os.path.dirname(path))
    else:
        directory = os.path.dirname(path) or "."
    manifest = read_manifest(directory)
    for entry in manifest["formats"]:
        if os.path.normpath(os.path.join(directory, entry["path"])) == path:
            return path, entry, manifest
    raise KblError(
        f"{path}: not listed in {os.path.join(directory, 'export.json')}; "
        "predict with a file written by `kbl export`"
    )


def _runner(path: str, entry: dict, manifest: dict):
    """A callable: dict of numpy inputs (raw strings or ids) -> dict of outputs."""
    if entry["format"] == "saved_model":
        import tensorflow as tf

        if entry["inputs"] == "text":
            import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        return lambda inputs: {
            k: v.numpy()
            for k, v in signature(
                **{k: tf.constant(v) for k, v in inputs.items()}
            ).items()
        }
    if entry["format"] == "tflite":
        from keras_bert_lite.export.to_tflite import interpreter

        runner = interpreter(path).get_signature_runner()
        return lambda inputs: runner(**inputs)
    if entry["format"] == "onnx":
        from keras_bert_lite.export.to_onnx import session

        onnx_session = session(path)
        names = [o.name for o in onnx_session.get_outputs()]
        return lambda inputs: dict(
            zip(names, onnx_session.run(names, inputs), strict=True)
        )
    raise KblError(f"export.json: unknown format {entry['format']!r}")


def predict(
    path: str, texts: Sequence[str], pairs: Sequence[str] | None = None
) -> list[dict]:
    """Labels with probabilities (or entities with character offsets) from an export.

    Args:
        path: an artefact written by `kbl export` (.tflite, .onnx, a SavedModel
            version directory) or the export directory itself.
        texts: the raw texts.
        pairs: the second texts of a sentence-pair classifier.

    Returns:
        One dict per text, as `training.finetune.predict` returns for a run.
    """
    path, entry, manifest = _locate(path)
    task, labels = manifest["task"], manifest["labels"]
    if task == "qa":
        raise KblError(
            "qa predictions need a question and a context: call the SavedModel's "
            "serving_default with `question` and `context`, or `kbl evaluate`"
        )
    if manifest.get("pair") and (pairs is None or len(pairs) != len(texts)):
        raise KblError(
            f"{path}: a sentence-pair model; give the second text of each (kbl "
            "predict --text-b, once per text; or --input a JSONL/CSV/TSV file with "
            "text_a and text_b)"
        )
    if pairs is not None and not manifest.get("pair"):
        raise KblError(f"{path}: a single-text model; it takes no second texts")
    columns = [list(texts)] + ([list(pairs)] if manifest.get("pair") else [])
    if entry["inputs"] == "text":
        inputs = {
            name: np.array(column, dtype=object)
            for name, column in zip(manifest["text_inputs"], columns, strict=False)
        }
    else:
        if task == "tag":
            raise KblError(
                f"{path}: an ids-only model; predict entities with the raw-text "
                "SavedModel or model.tflite, which map pieces back to characters"
            )
        inputs = _ids(manifest, columns)
    outputs = _runner(path, entry, manifest)(inputs)
    if task == "tag":
        return _entities(texts, outputs, labels, manifest)
    kind = manifest["label_kind"]
    if kind == "regression":
        probabilities = outputs.get("value", outputs.get("probabilities"))
    else:
        probabilities = outputs["probabilities"]
    return tasks.classification_predictions(
        texts,
        probabilities,
        labels,
        kind,
        _threshold(manifest) if kind == "multi_label" else 0.5,
        list(pairs) if manifest.get("pair") else None,
    )


def _threshold(manifest: dict) -> float:
    """A multi-label export's decision threshold: export.json's, or (exports from
    before it was recorded there) the run's."""
    if "threshold" in manifest:
        return float(manifest["threshold"])
    from keras_bert_lite import run as run_dir

    if os.path.isdir(manifest["run"]):
        options = run_dir.read_config(manifest["run"]).get("task_options") or {}
        return float(options.get("threshold", 0.5))
    return 0.5


def _ids(manifest: dict, columns: list[list[str]]) -> dict[str, np.ndarray]:
    """The id inputs of raw texts, packed by the run's tokenizer as in training."""
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.data import tasks

    if not os.path.isdir(manifest["run"]):
        raise KblError(
            f"the run {manifest['run']} that export.json names is gone; an ids-only "
            "model needs its vocabulary: predict with model.tflite or the SavedModel"
        )
    if len(columns) == 2:
        records = [{"text_a": a, "text_b": b} for a, b in zip(*columns, strict=True)]
    else:
        records = [{"text": t} for t in columns[0]]
    features = tasks.encode_classification(
        records, run_dir.load_tokenizer(manifest["run"]), manifest["seq_len"]
    )
    return {k: np.asarray(features[k], np.int32) for k in ID_INPUTS}


def _entities(
    texts: Sequence[str], outputs: dict, labels: list[str], manifest: dict
) -> list[dict]:
    """Entities from a raw-text tagger's per-piece outputs, decoded as the run
    decodes them (`training.finetune.predict`): the run's words (runs of non-space
    characters, each CJK character one), each scored at its first piece, and the
    tag sequence the scheme allows with the highest score (a CRF's learned
    transitions added, from export.json). Offsets are characters.

    An export reads the first seq_len - 2 pieces of a text; the words after them
    get no tags, and the text's result says where they begin (`truncated_at`, the
    character offset after the last word tagged), where the run would window it.
    """
    from keras_bert_lite.data import tasks
    from keras_bert_lite.training.metrics import extract_entities

    starts, ends = _piece_chars(texts, outputs)
    probabilities = np.asarray(outputs["probabilities"], np.float64)
    scheme = manifest.get("scheme") or (
        "BIOES" if any(t[:2] in ("E-", "S-") for t in labels) else "BIO"
    )
    masks = tasks.allowed_transitions(labels, scheme)
    learned = _crf(manifest)
    window = int(manifest["seq_len"]) - 2
    results = []
    for i, text in enumerate(texts):
        pieces = np.flatnonzero(starts[i] >= 0)
        piece_starts = starts[i][pieces]
        spans = tasks.words_with_offsets(text)
        result: dict = {"text": text}
        if len(pieces) >= window and spans:
            read_to = int(ends[i][pieces[-1]])
            read = [span for span in spans if span[0] < read_to]
            if len(read) < len(spans):  # the words from truncated_at on: no tags
                spans, result["truncated_at"] = read, read[-1][1] if read else 0
        # A word's score is its first piece's (none for a word without pieces).
        first = np.searchsorted(piece_starts, [s for s, _ in spans])
        scores = np.zeros((len(spans), len(labels)))
        for k, ((_, end), j) in enumerate(zip(spans, first, strict=True)):
            if j < len(pieces) and piece_starts[j] < end:
                scores[k] = np.log(np.maximum(probabilities[i, pieces[j]], 1e-30))
        tags = [labels[t] for t in tasks.viterbi_decode(scores, *masks, learned)]
        result["entities"] = [
            {
                "type": kind,
                "start": spans[s][0],
                "end": spans[e - 1][1],
                "text": text[spans[s][0] : spans[e - 1][1]],
            }
            for kind, s, e in extract_entities(tags, scheme)
        ]
        results.append(result)
    return results


def _piece_chars(texts: Sequence[str], outputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """[B, T] character spans of each piece in its text (-1 elsewhere): the
    SavedModel gives them; the .tflite file gives UTF-8 byte spans."""
    from keras_bert_lite.data import tasks

    if "start" in outputs:
        return np.asarray(outputs["start"]), np.asarray(outputs["end"])
    begin, end = np.asarray(outputs["piece_begin"]), np.asarray(outputs["piece_end"])
    starts, ends = np.full_like(begin, -1), np.full_like(end, -1)
    for i, text in enumerate(texts):
        piece = begin[i] >= 0
        chars = tasks._bytes_to_chars(text, begin[i][piece], end[i][piece])
        starts[i][piece], ends[i][piece] = chars[0], chars[1]
    return starts, ends


def _crf(manifest: dict):
    """A CRF tagger's (start, transitions, end) scores, or None without a CRF.
    Exports from before export.json recorded them read them from the run."""
    crf = manifest.get("crf")
    if crf is not None:
        return tuple(np.asarray(crf[k]) for k in ("start", "transitions", "end"))
    if "scheme" in manifest or not os.path.isdir(manifest["run"]):
        return None
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.training.finetune import transition_scores

    options = run_dir.read_config(manifest["run"]).get("task_options") or {}
    return (
        transition_scores(run_dir.load(manifest["run"])) if options.get("crf") else None
    )
