"""`verify`: every exported format against the Keras model it came from.

For each artefact in export.json: the largest |difference| of its outputs from the
Keras model's on the same inputs (probabilities; QA start/end logits; positions under
the padding mask only), the task metric on the data file, the file size, and the
latency of one input at a time (batch 1, one thread), median and 95th percentile.

Raw-text artefacts are fed the file's raw strings, so their numbers include the
in-graph tokenizer; they also report whether their token ids equal the training
pipeline's for every input. A tagger's raw-text artefacts are fed each sentence's
words joined as written, a QA model's the question and context, and are decoded as
`kbl predict` decodes them, every window of a long record (a .tflite file exported
before the files windowed scores a longer record as far as its one window reads:
`truncated` says how many); their parity is measured on the first window of the
records that training packs in one window (`compared`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from keras_bert_lite.errors import KblError
from keras_bert_lite.export import manifest as manifests
from keras_bert_lite.export.signatures import ID_INPUTS
from keras_bert_lite.export.source import ExportSource, load_source
from keras_bert_lite.io import write_json

VERIFY_JSON = "verify.json"
WARMUP_CALLS = 3


class _Fixed:
    """A stand-in model whose `predict` returns outputs computed elsewhere, so
    `finetune.score` scores any format the same way."""

    def __init__(self, outputs: dict[str, np.ndarray], model=None):
        from keras_bert_lite.training.finetune import transition_scores

        self.outputs = outputs
        self.scores = transition_scores(model)  # a tagger's CRF, decoded alike

    def predict(self, inputs, batch_size=None, verbose=0):
        return self.outputs

    def transition_scores(self):
        return self.scores


def _one_thread() -> int | None:
    """Limits TensorFlow to one thread (possible only before it starts running)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return 1
    except RuntimeError:
        return None


def _metric_of(task: str, kind: str, metrics: dict) -> tuple[str, float]:
    if task == "classify":
        if kind == "regression":
            return "mse", metrics["mse"]
        key = "micro_f1" if kind == "multi_label" else "macro_f1"
        return key, metrics[key]
    return "f1", metrics["f1"]


def _beside(metrics: dict) -> dict:
    """What a format's row reports beside its metric: classification accuracy,
    QA exact match."""
    return {k: metrics[k] for k in ("accuracy", "exact") if k in metrics}


def _max_difference(source: ExportSource, reference, outputs, mask) -> float:
    """max |output - reference| over the compared outputs (padding excluded)."""
    keys = ("start_logits", "end_logits") if source.task == "qa" else ("probabilities",)
    worst = 0.0
    for key in keys:
        ref = np.asarray(reference[key], np.float64)
        out = np.asarray(outputs[key], np.float64).reshape(ref.shape)
        diff = np.abs(out - ref)
        if source.task != "classify":
            diff = diff[mask.astype(bool)]
        if diff.size:
            if not np.all(np.isfinite(out)):
                return float("nan")
            worst = max(worst, float(diff.max()))
    return worst


def _timed(calls: list[Callable[[], dict]]) -> tuple[list[dict], list[float]]:
    """Runs each call once (after a few untimed warm-up calls); returns the outputs
    and the seconds each took."""
    for call in calls[:WARMUP_CALLS]:
        call()
    results, seconds = [], []
    for call in calls:
        started = time.perf_counter()
        results.append(call())
        seconds.append(time.perf_counter() - started)
    return results, seconds


def _stack(rows: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def _id_rows(inputs: dict) -> list[dict[str, np.ndarray]]:
    n = len(inputs["token_ids"])
    return [
        {k: np.asarray(inputs[k][i : i + 1], np.int32) for k in ID_INPUTS}
        for i in range(n)
    ]


def _text_columns(source: ExportSource, records) -> dict[str, list[str]]:
    if source.pair:
        return {
            "text": [r["text_a"] for r in records],
            "text_pair": [r["text_b"] for r in records],
        }
    return {"text": [r["text"] for r in records]}


def _runners(entry: dict, path: str, source: ExportSource):
    """(ids runner, text runner) for one artefact: callables on one input (a dict
    of [1, T] arrays, or of [1] strings) returning a dict of outputs; None where
    the artefact has no such input."""
    fmt = entry["format"]
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        ids_fn = loaded.signatures["ids"]

        def run_ids(row):
            outputs = ids_fn(**{k: tf.constant(v) for k, v in row.items()})
            return {k: v.numpy() for k, v in outputs.items()}

        if entry.get("inputs") == "ids":
            return run_ids, None
        text_fn = loaded.signatures["serving_default"]
        tokenize_fn = loaded.signatures["tokenize"]

        def run_text(row):
            strings = {k: tf.constant(v) for k, v in row.items()}
            out = {k: v.numpy() for k, v in text_fn(**strings).items()}
            if "value" in out:
                out["probabilities"] = out["value"]
            # Taggers and QA models serve the ids they ran; classifiers, packed to the
            # batch's longest row, serve none: theirs are `tokenize`'s.
            if "token_ids" not in out:
                out["token_ids"] = tokenize_fn(**strings)["token_ids"].numpy()
            return out

        return run_ids, run_text
    if fmt == "tflite":
        from keras_bert_lite.export.to_tflite import interpreter

        runner = interpreter(path, num_threads=1).get_signature_runner()

        def run(row):
            return runner(**row)

        if entry.get("inputs") == "ids":
            return run, None

        def run_text(row):
            return run({k: np.asarray(v, dtype=object) for k, v in row.items()})

        return None, run_text
    if fmt == "onnx":
        from keras_bert_lite.export.to_onnx import session

        onnx_session = session(path, num_threads=1)
        names = [o.name for o in onnx_session.get_outputs()]

        def run_onnx(row):
            return dict(zip(names, onnx_session.run(names, row), strict=True))

        return run_onnx, None
    raise KblError(f"export.json: unknown format {fmt!r} for {entry['path']}")


def verify(
    export_dir: str,
    data: str | None = None,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Checks every artefact in an export directory against the Keras model.

    Args:
        export_dir: a directory written by `export_all` (or the single exporters).
        data: a labelled task file; default: the run's dev file recorded in
            export.json.
        limit: use only the first `limit` records of the file.
        log: where the table and progress lines go.

    Returns:
        {"export", "run", "data", "records", "threads", "keras": {metric},
        "formats": {name: {"input", "max_abs_diff", metric, "bytes",
        "latency_ms": {"p50", "p95"}, ...}}}; also written to EXPORT/verify.json.
    """
    from keras_bert_lite.training import finetune

    threads = _one_thread()
    manifest = manifests.read_manifest(export_dir)
    if not os.path.isdir(manifest["run"]):
        raise KblError(
            f"{os.path.join(export_dir, 'export.json')}: the run {manifest['run']} "
            "is gone; verify compares against its Keras model"
        )
    source = load_source(manifest["run"])
    if not data:
        data = manifest.get("dev_file")
        if not data:
            raise KblError(
                f"{os.path.join(export_dir, 'export.json')}: records no dev file; "
                "pass --data FILE"
            )
        if not os.path.exists(data):
            raise KblError(
                f"{data}: the run's dev file (verify's default data) is not there; "
                "pass --data FILE"
            )
    records = finetune.read_scored(
        source.run,
        source.task,
        source.pair,
        source.labels,
        data,
        str(source.options.get("scheme", "BIO")),
        source.label_kind,
    )
    if limit is not None:
        records = records[:limit]
    encoded = finetune._encode(
        source.task, records, source.tokenizer, source.labels, source.options
    )
    options = source.options
    reference = {
        k: np.asarray(v)
        for k, v in source.model.predict(
            encoded.inputs, batch_size=64, verbose=0
        ).items()
    }
    metrics, _ = finetune.score(
        source.task, _Fixed(reference, source.model), encoded, source.labels, options
    )
    metric_name, keras_metric = _metric_of(source.task, source.label_kind, metrics)
    log(
        f"verifying {export_dir} on {len(records)} records of {data} "
        f"(Keras {metric_name} {keras_metric:.4f})"
    )
    mask = np.asarray(encoded.inputs["padding_mask"])
    report: dict[str, Any] = {
        "export": os.path.abspath(export_dir),
        "run": source.run,
        "data": os.path.abspath(data),
        "records": len(records),
        "features": int(len(mask)),
        "metric": metric_name,
        "threads": threads or "default (TensorFlow was already running)",
        "keras": {metric_name: keras_metric, "metrics": metrics},
        "formats": {},
    }
    for entry in manifest["formats"]:
        path = os.path.join(export_dir, entry["path"])
        rows = _verify_entry(
            entry, path, source, manifest, encoded, records, reference, mask
        )
        for name, row in rows.items():
            row.setdefault(
                "bytes", manifests.size_of(path) if os.path.exists(path) else None
            )
            report["formats"][name] = row
            log(f"  checked {name}")
    write_json(os.path.join(export_dir, VERIFY_JSON), report)
    manifests.make_readable(os.path.join(export_dir, VERIFY_JSON))
    log(format_table(report))
    return report


def _verify_entry(
    entry, path, source, manifest, encoded, records, reference, mask
) -> dict:
    from keras_bert_lite.training import finetune

    name = entry["name"]
    if not os.path.exists(path):
        return {name: {"input": entry.get("inputs"), "error": f"{path}: missing"}}
    run_ids, run_text = _runners(entry, path, source)
    rows: dict[str, dict] = {}
    checks = []
    if run_text is not None:
        if source.task == "classify":
            columns = _text_columns(source, records)
            inputs = [
                {k: np.array([v[i]], dtype=object) for k, v in columns.items()}
                for i in range(len(records))
            ]
            checks.append((name, "text", run_text, inputs))
        else:
            rows[name] = _raw_text_row(
                entry, source, manifest, run_text, encoded, reference
            )
    if run_ids is not None:
        label = name if run_text is None else f"{name}:ids"
        checks.append((label, "ids", run_ids, _id_rows(encoded.inputs)))
    for label, kind, run, inputs in checks:
        outputs, seconds = _timed([lambda x=x, run=run: run(x) for x in inputs])
        stacked = _stack(outputs)
        if "probabilities" not in stacked and "value" in stacked:
            stacked["probabilities"] = stacked["value"]
        metrics, _ = finetune.score(
            source.task,
            _Fixed(
                {k: stacked[k] for k in source.output_names if k in stacked},
                source.model,
            ),
            encoded,
            source.labels,
            source.options,
        )
        metric_name, value = _metric_of(source.task, source.label_kind, metrics)
        ms = np.asarray(seconds) * 1000.0
        row = {
            "input": kind,
            "max_abs_diff": _max_difference(source, reference, stacked, mask),
            metric_name: value,
            **_beside(metrics),
            "latency_ms": {
                "p50": float(np.percentile(ms, 50)),
                "p95": float(np.percentile(ms, 95)),
            },
            "quantize": entry.get("quantize", "none"),
        }
        if kind == "text" and "token_ids" in stacked:
            row["token_ids_match"] = bool(
                np.array_equal(stacked["token_ids"], encoded.inputs["token_ids"])
            )
        rows[label] = row
    return rows


def _raw_text_row(entry, source, manifest, run_text, encoded, reference) -> dict:
    """A raw-text tagger or QA artefact, fed each record as raw text (a sentence's
    words joined as written; a question and its context) and decoded as `kbl
    predict` decodes it: the task metric over every record (a file that reads one
    window, exported before the .tflite files windowed, scores a longer record on
    what it read: `truncated` counts them), and the largest |difference| of the
    first window's outputs from the Keras model on the records that training packs
    in one window with the same token ids (`compared`)."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.export.predict import tagged, text_answers
    from keras_bert_lite.training import metrics as m

    records = encoded.records
    if source.task == "tag":
        joined = [tasks.join_words_with_offsets(words) for words, _ in records]
        inputs = [{"text": np.array([text], dtype=object)} for text, _ in joined]
        window_of = encoded.features.sentence_index
        compared_keys = ("probabilities",)
    else:
        inputs = [
            {
                "question": np.array([ex.question], dtype=object),
                "context": np.array([ex.context], dtype=object),
            }
            for ex in records
        ]
        window_of = encoded.features.example_index
        compared_keys = ("start_logits", "end_logits")
    outputs, seconds = _timed([lambda x=x: run_text(x) for x in inputs])
    if source.task == "tag":
        scheme = str(source.options.get("scheme", "BIO"))
        results = [
            tagged([text], out, manifest)[0]
            for (text, _), out in zip(joined, outputs, strict=True)
        ]
        predicted = [
            _word_tags(spans, result["entities"], scheme)
            for (_, spans), result in zip(joined, results, strict=True)
        ]
        metrics = m.entity_metrics([tags for _, tags in records], predicted, scheme)
    else:
        threshold = float(source.options.get("null_threshold", 0.0))
        results = [
            text_answers([ex], out, threshold)[0]
            for ex, out in zip(records, outputs, strict=True)
        ]
        metrics = m.squad_metrics(
            {ex.id: r["text"] for ex, r in zip(records, results, strict=True)},
            {ex.id: [text for text, _ in ex.answers] for ex in records},
        )
    # Parity where the first window is training's only window of the record.
    windows = np.bincount(window_of, minlength=len(records))
    worst, compared, same_ids = 0.0, 0, True
    for i, out in enumerate(outputs):
        if windows[i] != 1:
            continue
        f = int(np.flatnonzero(window_of == i)[0])
        if not np.array_equal(out["token_ids"][0], encoded.inputs["token_ids"][f]):
            same_ids = False
            continue
        real = np.asarray(encoded.inputs["padding_mask"][f]).astype(bool)
        for key in compared_keys:
            got = np.asarray(out[key][0], np.float64)[real]
            want = np.asarray(reference[key][f], np.float64)[real]
            if not np.all(np.isfinite(got)):
                worst = float("nan")
            elif worst == worst:  # not nan yet
                worst = max(worst, float(np.abs(got - want).max(initial=0.0)))
        compared += 1
    ms = np.asarray(seconds) * 1000.0
    metric_name, value = _metric_of(source.task, source.label_kind, metrics)
    return {
        "input": "text",
        "max_abs_diff": worst if compared else float("nan"),
        metric_name: value,
        **_beside(metrics),
        "latency_ms": {
            "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)),
        },
        "quantize": entry.get("quantize", "none"),
        "token_ids_match": same_ids,
        "compared": compared,
        "truncated": sum("truncated_at" in r for r in results),
    }


def _word_tags(spans, entities: list[dict], scheme: str) -> list[str]:
    """Tags of the words at character `spans` for the entities found in their
    text: the words each entity overlaps, tagged in the scheme. (Raw text splits a
    record's word "Mary's." into "Mary's" and ".": an entity "Mary's" is the
    word's.)"""
    tags = ["O"] * len(spans)
    for entity in entities:
        inside = [
            i
            for i, (start, end) in enumerate(spans)
            if start < entity["end"] and end > entity["start"]
        ]
        if not inside:
            continue
        kind = entity["type"]
        for i in inside:
            tags[i] = f"I-{kind}"
        tags[inside[0]] = f"B-{kind}"
        if scheme == "BIOES":
            tags[inside[-1]] = f"E-{kind}" if len(inside) > 1 else f"S-{kind}"
    return tags


def format_table(report: dict) -> str:
    """The report as a fixed-width table."""
    metric = report["metric"]
    header = (
        f"{'format':<22} {'input':<5} {'max|diff|':>10} {metric:>9} {'size':>9} "
        f"{'p50 ms':>8} {'p95 ms':>8}"
    )
    lines = [header, "-" * len(header)]
    keras = report["keras"][metric]
    lines.append(
        f"{'keras':<22} {'ids':<5} {'-':>10} {keras:>9.4f} {'-':>9} {'-':>8} {'-':>8}"
    )
    for name, row in report["formats"].items():
        if "max_abs_diff" not in row:
            why = row.get("error") or row.get("skipped", "")
            lines.append(f"{name:<22} {row.get('input') or '':<5} {why}")
            continue
        size = row.get("bytes") or 0
        lines.append(
            f"{name:<22} {row['input']:<5} {row['max_abs_diff']:>10.2e} "
            f"{row[metric]:>9.4f} {size / 2**20:>6.2f}MiB "
            f"{row['latency_ms']['p50']:>8.2f} {row['latency_ms']['p95']:>8.2f}"
        )
    for name, row in report["formats"].items():
        if row.get("truncated"):
            lines.append(
                f"{name}: {row['truncated']} of {report['records']} records longer "
                "than the one window it reads, scored on what it read"
            )
        if row.get("token_ids_match") is False:
            lines.append(f"{name}: token ids differ from training's for some records")
    return "\n".join(lines)
