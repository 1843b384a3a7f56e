"""Predictions from an exported artefact, as `kbl predict` prints them for a run.

    kbl predict --model exports/sentiment/model.int8.tflite "A gripping film."
    kbl predict --model exports/sentiment/model.onnx "A gripping film."
    kbl predict --model exports/sentiment "A gripping film."   # the raw-text SavedModel
    kbl predict --model exports/qa/model.tflite --question Q --context C

Raw-text artefacts (the SavedModel's `serving_default`, model*.tflite) tokenize
inside the file. Ids-only artefacts (model_ids.tflite, model.onnx, saved_model_ids)
are fed the ids of `tokenize` from the run recorded in export.json, packed as
training packs them. Labels (and a tagger's scheme and CRF transitions, a QA model's
window settings and null threshold) come from export.json beside the artefact, and
the outputs are decoded as `training.finetune.predict` decodes a run's, from every
window of a long text (the raw-text SavedModel of a tagger or QA model has done so in
its graph already: its entities and answers are read as they are).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from keras_bert_lite import run as run_dir
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
    path: str,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    contexts: Sequence[str] | None = None,
    threshold: float | None = None,
) -> list[dict]:
    """Labels with probabilities (or entities, or answers, with character offsets)
    from an export.

    Args:
        path: an artefact written by `kbl export` (.tflite, .onnx, a SavedModel
            version directory) or the export directory itself.
        texts: the raw texts (QA: the questions).
        pairs: the second texts of a sentence-pair classifier.
        contexts: QA: the context of each question.
        threshold: a multi-label model's decision threshold (None: the one tuned
            on dev, which export.json carries).

    Returns:
        One dict per text, as `training.finetune.predict` returns for a run.
    """
    path, entry, manifest = _locate(path)
    task, labels = manifest["task"], manifest["labels"]
    kind = manifest.get("label_kind", "single") if task == "classify" else task
    tuned = _threshold(manifest) if kind == "multi_label" else 0.5
    threshold = tasks.decision_threshold(threshold, tuned, kind, path)
    if task == "qa":
        if contexts is None or len(contexts) != len(texts):
            raise KblError(
                f"{path}: a QA model; give one context per question (kbl predict "
                "--question Q --context C, or --input SQUAD.json)"
            )
        return _answers(path, entry, manifest, list(texts), list(contexts))
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
    elif task == "tag":
        return _windowed_entities(path, entry, manifest, list(texts))
    else:
        inputs = _ids(manifest, columns)
    outputs = _runner(path, entry, manifest)(inputs)
    if task == "tag":
        return tagged(texts, outputs, manifest)
    if kind == "regression":
        probabilities = outputs.get("value", outputs.get("probabilities"))
    else:
        probabilities = outputs["probabilities"]
    return tasks.classification_predictions(
        texts,
        probabilities,
        labels,
        kind,
        threshold,
        list(pairs) if manifest.get("pair") else None,
    )


def _threshold(manifest: dict) -> float:
    """A multi-label export's decision threshold: export.json's, or (exports from
    before it was recorded there) the run's."""
    if "threshold" in manifest:
        return float(manifest["threshold"])
    return float(_run_options(manifest).get("threshold", 0.5))


def _run_options(manifest: dict) -> dict:
    """The task_options of the run export.json names ({} when the run is gone):
    where exports from before export.json recorded a setting find it."""
    if not os.path.isdir(manifest["run"]):
        return {}
    return run_dir.read_config(manifest["run"]).get("task_options") or {}


def _ids(manifest: dict, columns: list[list[str]]) -> dict[str, np.ndarray]:
    """The id inputs of raw texts, packed by the run's tokenizer as in training."""
    run = _run_of(manifest)
    if len(columns) == 2:
        records = [{"text_a": a, "text_b": b} for a, b in zip(*columns, strict=True)]
    else:
        records = [{"text": t} for t in columns[0]]
    features = tasks.encode_classification(
        records, run_dir.load_tokenizer(run), manifest["seq_len"]
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

    A .tflite file gives every piece of a text, read from the window where it has
    the most context (`text_probabilities`), as the run windows a long text. Files
    from before it did, and other per-piece outputs of one window, read the first
    seq_len - 2 pieces of a text; the words after them get no tags, and the text's
    result says where they begin (`truncated_at`, the character offset after the
    last word tagged), where the run would window it.
    """
    from keras_bert_lite.training.finetune import entities

    if "text_probabilities" in outputs:
        starts, ends = _byte_spans_to_chars(
            texts, outputs["text_piece_begin"], outputs["text_piece_end"]
        )
        probabilities = np.asarray(outputs["text_probabilities"], np.float64)
        window = None  # every piece was read
    else:
        starts, ends = _piece_chars(texts, outputs)
        probabilities = np.asarray(outputs["probabilities"], np.float64)
        window = int(manifest["seq_len"]) - 2
    scheme = _scheme(manifest)
    masks = tasks.allowed_transitions(labels, scheme)
    learned = _crf(manifest)
    results = []
    for i, text in enumerate(texts):
        pieces = np.flatnonzero(starts[i] >= 0)
        piece_starts = starts[i][pieces]
        spans = tasks.words_with_offsets(text)
        result: dict = {"text": text}
        if window is not None and len(pieces) >= window and spans:
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
        result["entities"] = entities(text, spans, tags, scheme)
        results.append(result)
    return results


def tagged(texts: Sequence[str], outputs: dict, manifest: dict) -> list[dict]:
    """Entities from a raw-text tagger's outputs on `texts`: the SavedModel's own
    decoding, or the .tflite file's per-piece outputs decoded as the run decodes
    (with `truncated_at` from a file that reads one window)."""
    if "entity_type" in outputs:
        return _served_entities(texts, outputs)
    return _entities(texts, outputs, manifest["labels"], manifest)


def _served_entities(texts: Sequence[str], outputs: dict) -> list[dict]:
    """Entities as the raw-text SavedModel decodes them in its graph
    (`export.tag_graph`, the decoding of `_entities`)."""
    columns = ("entity_type", "entity_start", "entity_end", "entity_text")
    results = []
    for i, text in enumerate(texts):
        result: dict = {"text": text}
        if "truncated_at" in outputs and outputs["truncated_at"][i] >= 0:
            result["truncated_at"] = int(outputs["truncated_at"][i])
        result["entities"] = [
            {"type": kind.decode(), "start": int(s), "end": int(e), "text": t.decode()}
            for kind, s, e, t in zip(*(outputs[c][i] for c in columns), strict=True)
            if kind
        ]
        results.append(result)
    return results


def _windowed_entities(
    path: str, entry: dict, manifest: dict, texts: list[str]
) -> list[dict]:
    """Entities from an ids-only tagger, fed the run's windows of each text (packed
    by its tokenizer as training packs them): what the run predicts, long texts
    included."""
    from keras_bert_lite.training.finetune import tag_texts

    runner = _runner(path, entry, manifest)
    return tag_texts(
        texts,
        run_dir.load_tokenizer(_run_of(manifest)),
        int(manifest["seq_len"]),
        manifest["labels"],
        _scheme(manifest),
        lambda inputs: runner({k: np.asarray(inputs[k], np.int32) for k in ID_INPUTS})[
            "logits"
        ],
        _crf(manifest),
    )


def _piece_chars(texts: Sequence[str], outputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """[B, T] character spans of each piece in its text (-1 elsewhere): the
    SavedModel gives them; the .tflite file gives UTF-8 byte spans."""
    if "start" in outputs:
        return np.asarray(outputs["start"]), np.asarray(outputs["end"])
    return _byte_spans_to_chars(texts, outputs["piece_begin"], outputs["piece_end"])


def _byte_spans_to_chars(
    texts: Sequence[str], begin, end
) -> tuple[np.ndarray, np.ndarray]:
    """[B, T] character spans of the pieces whose UTF-8 byte spans in their text are
    `begin`/`end` (-1 stays -1)."""
    begin, end = np.asarray(begin), np.asarray(end)
    starts, ends = np.full_like(begin, -1), np.full_like(end, -1)
    for i, text in enumerate(texts):
        piece = begin[i] >= 0
        chars = tasks._bytes_to_chars(text, begin[i][piece], end[i][piece])
        starts[i][piece], ends[i][piece] = chars[0], chars[1]
    return starts, ends


def _scheme(manifest: dict) -> str:
    """A tagger's scheme: export.json's, or (exports from before it was recorded)
    told by its tags."""
    if manifest.get("scheme"):
        return manifest["scheme"]
    return "BIOES" if any(t[:2] in ("E-", "S-") for t in manifest["labels"]) else "BIO"


def _run_of(manifest: dict) -> str:
    """The run export.json names, which an ids-only artefact needs for its
    vocabulary (KblError when it is gone)."""
    if not os.path.isdir(manifest["run"]):
        raise KblError(
            f"the run {manifest['run']} that export.json names is gone; an ids-only "
            "model needs its vocabulary: predict with model.tflite or the SavedModel"
        )
    return manifest["run"]


def _crf(manifest: dict):
    """A CRF tagger's (start, transitions, end) scores, or None without a CRF.
    Exports from before export.json recorded them read them from the run."""
    crf = manifest.get("crf")
    if crf is not None:
        return tuple(np.asarray(crf[k]) for k in ("start", "transitions", "end"))
    if "scheme" in manifest or not _run_options(manifest).get("crf"):
        return None
    from keras_bert_lite.training.finetune import transition_scores

    return transition_scores(run_dir.load(manifest["run"]))


def _answers(
    path: str, entry: dict, manifest: dict, questions: list[str], contexts: list[str]
) -> list[dict]:
    """Answers from a QA export, decoded as the run decodes them
    (`tasks.decode_squad`: the n-best spans, the null score against the threshold).

    Ids-only artefacts are fed every window of each context, packed by the run's
    tokenizer as in training, so they answer as the run does; so does the raw-text
    SavedModel, which windows and decodes in its graph, and the raw-text .tflite
    files, which window in the file and are decoded here. (.tflite files exported
    before they did read the first window; where a context goes on past it, the
    answer says where reading stopped: `truncated_at`, the character after the
    last piece read.)
    """
    examples = [
        tasks.QAExample(id=str(i), question=q, context=c)
        for i, (q, c) in enumerate(zip(questions, contexts, strict=True))
    ]
    threshold = float(manifest.get("null_threshold", 0.0))
    runner = _runner(path, entry, manifest)
    if entry["inputs"] == "text":
        outputs = runner(
            {
                "question": np.array(questions, dtype=object),
                "context": np.array(contexts, dtype=object),
            }
        )
        return text_answers(examples, outputs, threshold)
    features = tasks.encode_squad(
        examples,
        run_dir.load_tokenizer(_run_of(manifest)),
        int(manifest["seq_len"]),
        int(manifest.get("doc_stride", 128)),
        int(manifest.get("max_query_len", 64)),
    )
    outputs = runner({k: np.asarray(getattr(features, k), np.int32) for k in ID_INPUTS})
    return _decoded(examples, features, outputs, threshold, [None] * len(examples))


def text_answers(
    examples: Sequence[tasks.QAExample], outputs: dict, threshold: float
) -> list[dict]:
    """Answers from a raw-text QA artefact's outputs on `examples`: the SavedModel's
    own (chosen in its graph from every window of the context, as the run decodes),
    a .tflite file's every window decoded as the run decodes, or, from a file that
    reads one window (exported before they read every one), `first_window_answers`.
    """
    if "window_question" in outputs:
        return _window_answers(examples, outputs, threshold)
    if "answer" not in outputs:
        return first_window_answers(examples, outputs, threshold)
    columns = (outputs[k] for k in ("answer", "start", "end", "score"))
    return [
        {
            "question": ex.question,
            "text": answer.decode(),
            "start": int(start),
            "end": int(end),
            "score": float(score),
        }
        for ex, answer, start, end, score in zip(examples, *columns, strict=True)
    ]


def _window_answers(
    examples: Sequence[tasks.QAExample], outputs: dict, threshold: float
) -> list[dict]:
    """Answers from a raw-text .tflite QA file's outputs on `examples`: every
    window of each context (`window_*`), decoded as the run decodes."""
    question = np.asarray(outputs["window_question"])
    begin = np.asarray(outputs["window_piece_begin"])
    end = np.asarray(outputs["window_piece_end"])
    starts, ends = np.full_like(begin, -1), np.full_like(end, -1)
    for q, ex in enumerate(examples):
        # A context's windows as one row: its characters are located once.
        rows = question == q
        shape = begin[rows].shape
        chars = _byte_spans_to_chars(
            [ex.context], begin[rows].reshape(1, -1), end[rows].reshape(1, -1)
        )
        starts[rows], ends[rows] = (c.reshape(shape) for c in chars)
    features = _read_features(
        starts, ends, question, np.asarray(outputs["window_max_context"], bool)
    )
    logits = {k: outputs[f"window_{k}"] for k in ("start_logits", "end_logits")}
    return _decoded(examples, features, logits, threshold, [None] * len(examples))


def first_window_answers(
    examples: Sequence[tasks.QAExample], outputs: dict, threshold: float
) -> list[dict]:
    """Answers from a raw-text QA artefact's outputs on `examples` (one window per
    question, as the file reads it), decoded as the run decodes; `truncated_at`
    where the context goes on past the window."""
    features, read_to = _first_windows([ex.context for ex in examples], outputs)
    return _decoded(examples, features, outputs, threshold, read_to)


def _decoded(examples, features, outputs: dict, threshold: float, read_to: list):
    """`tasks.decode_squad`'s answers, one dict per question in order, with the
    question and (where not None) `truncated_at`."""
    answers = tasks.decode_squad(
        features,
        outputs["start_logits"],
        outputs["end_logits"],
        examples,
        null_threshold=threshold,
    )
    results = []
    for ex, cut in zip(examples, read_to, strict=True):
        result = {"question": ex.question, **answers[ex.id]}
        if cut is not None:
            result["truncated_at"] = cut
        results.append(result)
    return results


def _first_windows(contexts: list[str], outputs: dict):
    """(`tasks.QAFeatures` of a raw-text QA export's one window per question, and
    per context the character after its last piece read, or None when it was read
    to the end)."""
    starts, ends = _byte_spans_to_chars(
        contexts, outputs["piece_begin"], outputs["piece_end"]
    )
    read_to = []
    for context, row in zip(contexts, ends, strict=True):
        last = int(row.max(initial=0))  # the end of the last piece read
        read_to.append(last if context[last:].strip() else None)
    # One window: every piece has its most context here.
    features = _read_features(starts, ends, np.arange(len(contexts)), starts >= 0)
    return features, read_to


def _read_features(starts, ends, question, max_context) -> tasks.QAFeatures:
    """`tasks.QAFeatures` for decoding the windows a raw-text file read: the
    context pieces' character spans [R, T] (-1 elsewhere), each window's question
    [R] and the pieces whose most-context window it is [R, T]."""
    n = len(question)
    return tasks.QAFeatures(
        token_ids=np.zeros_like(starts),  # only its shape is read by the decoding
        segment_ids=np.zeros_like(starts),
        padding_mask=np.zeros_like(starts),
        start_positions=np.zeros(n, np.int32),
        end_positions=np.zeros(n, np.int32),
        example_index=np.asarray(question, np.int32),
        token_to_char=np.stack([starts, ends], -1).astype(np.int32),
        max_context=max_context,
    )
