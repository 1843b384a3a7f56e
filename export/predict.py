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
        return _entities(texts, outputs, labels, manifest["run"])
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
    texts: Sequence[str], outputs: dict, labels: list[str], run: str
) -> list[dict]:
    """Entities from the raw-text tagger's per-piece outputs: a word's tag is that of
    its first piece (as training labels it); offsets are characters.

    The SavedModel returns tags, character offsets and word starts; the .tflite file
    returns probabilities, token ids and UTF-8 byte offsets, turned into the same
    here (word starts from the run's vocabulary, when the run is still there).
    """
    from keras_bert_lite.training.metrics import extract_entities

    if "tags" not in outputs:
        outputs = _tflite_tags(texts, outputs, labels, run)
    scheme = "BIOES" if any(t[:2] in ("E-", "S-") for t in labels) else "BIO"
    results = []
    for i, text in enumerate(texts):
        words: list[list] = []  # [tag, start, end] per word
        starts, ends = np.asarray(outputs["start"][i]), np.asarray(outputs["end"][i])
        for position in np.flatnonzero(starts >= 0):
            start, end = int(starts[position]), int(ends[position])
            if outputs["word_start"][i][position] or not words:
                tag = outputs["tags"][i][position]
                tag = tag.decode() if isinstance(tag, bytes) else str(tag)
                words.append([tag, start, end])
            else:
                words[-1][2] = end
        entities = [
            {
                "type": kind,
                "start": words[s][1],
                "end": words[e - 1][2],
                "text": text[words[s][1] : words[e - 1][2]],
            }
            for kind, s, e in extract_entities([w[0] for w in words], scheme)
        ]
        results.append({"text": text, "entities": entities})
    return results


def _tflite_tags(texts, outputs: dict, labels: list[str], run: str) -> dict:
    """The SavedModel's tagging outputs from the .tflite file's."""
    from keras_bert_lite.data import tasks

    begin, end = np.asarray(outputs["piece_begin"]), np.asarray(outputs["piece_end"])
    starts, ends = np.full_like(begin, -1), np.full_like(end, -1)
    for i, text in enumerate(texts):
        piece = begin[i] >= 0
        chars = tasks._bytes_to_chars(text, begin[i][piece], end[i][piece])
        starts[i][piece], ends[i][piece] = chars[0], chars[1]
    vocab = os.path.join(run, "vocab.txt")
    token_ids = np.asarray(outputs["token_ids"])
    if os.path.exists(vocab):
        with open(vocab, encoding="utf-8") as f:
            continuation = np.array([line.startswith("##") for line in f])
        word_start = ~continuation[token_ids]
    else:  # every piece its own word
        word_start = np.ones_like(token_ids, bool)
    tag_ids = np.asarray(outputs["probabilities"]).argmax(-1)
    return {
        "tags": np.array(labels, dtype=object)[tag_ids],
        "start": starts,
        "end": ends,
        "word_start": word_start,
    }
