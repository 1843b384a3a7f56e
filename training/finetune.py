"""`finetune()`, `evaluate()` and `predict()` for the BERT task families.

Tasks:
- "classify": sentence or sentence-pair classification from [CLS] (JSONL/CSV/TSV with
  `text` or `text_a`/`text_b` and `label`); a list of labels per record makes it
  multi-label (sigmoid, a decision threshold tuned on dev), a number makes it
  regression.
- "tag": token classification (CoNLL `token<TAB>tag`, BIO or BIOES).
- "qa": extractive question answering (SQuAD v1.1 / v2.0 JSON).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_bert_lite import run as run_dir
from keras_bert_lite.config import (
    CONFIG_VERSION,
    POOLING,
    BertConfig,
    DataConfig,
    TrainConfig,
)
from keras_bert_lite.errors import KblError
from keras_bert_lite.io import atomic_path, write_json

TASKS = ("classify", "tag", "qa")


@dataclasses.dataclass
class FinetuneResult:
    run: str  # the run directory written
    metrics: dict  # the best dev metrics
    epochs: int  # epochs trained
    seconds: float  # wall time of the run, resumed calls included (see PretrainResult)


@dataclasses.dataclass
class TaskData:
    """A task file read and encoded: the model features and what maps them back."""

    inputs: dict  # token_ids, segment_ids, padding_mask
    targets: dict  # task targets by name
    weights: dict | None  # {"label_weights": ...} where some positions do not count
    records: Any  # the records as read (for decoding and metrics)
    features: Any = None  # TaggingFeatures / QAFeatures for decoding


# What each task reads, and the file names that say "another task's format": such a
# file would otherwise fail deep in the reader, about JSON or columns, not the task.
_FORMATS = {
    "classify": "JSONL, CSV or TSV records (text or text_a/text_b, and label)",
    "tag": "CoNLL (token<TAB>tag lines, a blank line between sentences)",
    "qa": "SQuAD v1.1 / v2.0 JSON",
}
_OTHER_FORMATS = {
    "classify": {".conll": "tag", ".json": "qa"},
    "tag": {".jsonl": "classify", ".csv": "classify", ".json": "qa"},
    "qa": {
        ".jsonl": "classify",
        ".csv": "classify",
        ".tsv": "classify",
        ".conll": "tag",
    },
}


def _read(task: str, path: str):
    from keras_bert_lite.data import tasks

    suffix = os.path.splitext(str(path).removesuffix(".gz"))[1].lower()
    other = _OTHER_FORMATS.get(task, {}).get(suffix)
    if task == "classify" and suffix == ".json" and not tasks.is_squad(path):
        other = None  # JSON lines named .json
    if other:
        raise KblError(
            f"{path}: the {task} task reads {_FORMATS[task]}; a {suffix} file is "
            f"the {other} task's ({_FORMATS[other]})"
        )
    if task == "classify":
        return tasks.read_classification(path)
    if task == "tag":
        return tasks.read_conll(path)
    if task == "qa":
        return tasks.read_squad(path)
    raise KblError(f"unknown task '{task}': choose one of {', '.join(TASKS)}")


def _labels(task: str, records) -> list[str]:
    from keras_bert_lite.data import tasks

    if task == "qa":
        return []
    if task == "tag":
        return sorted({t for _, tags in records for t in tags})
    return tasks.collect_labels(records)


def _encode(task: str, records, tokenizer, labels, options: dict) -> TaskData:
    from keras_bert_lite.data import tasks

    seq_len = options["seq_len"]
    if task == "classify":
        encoded = tasks.encode_classification(
            records, tokenizer, seq_len, labels or None
        )
        inputs = {k: encoded[k] for k in ("token_ids", "segment_ids", "padding_mask")}
        return TaskData(inputs, {"labels": encoded["labels"]}, None, records)
    if task == "tag":
        features = tasks.encode_tagging(
            [w for w, _ in records], [t for _, t in records], tokenizer, seq_len, labels
        )
        return TaskData(
            features.inputs(),
            {"labels": features.labels},
            {"label_weights": features.label_weights},
            records,
            features,
        )
    features = tasks.encode_squad(
        records, tokenizer, seq_len, options["doc_stride"], options["max_query_len"]
    )
    return TaskData(
        features.inputs(),
        {
            "start_positions": features.start_positions,
            "end_positions": features.end_positions,
        },
        None,
        records,
        features,
    )


def _label_kind(records) -> str:
    label = records[0].get("label") if records else None
    if isinstance(label, list):
        return "multi_label"
    if isinstance(label, float):
        return "regression"
    return "single"


def _score_range(records) -> str:
    scores = [r["label"] for r in records]
    return f", regression: scores {min(scores):g} to {max(scores):g}"


def _predict_outputs(model, inputs: dict, batch_size: int) -> dict:
    return model.predict(inputs, batch_size=batch_size, verbose=0)


def score(
    task: str,
    model,
    data: TaskData,
    labels: list[str],
    options: dict,
    batch_size: int = 64,
    outputs: dict | None = None,
) -> tuple[dict, Any]:
    """Runs the model over encoded data (or takes its `outputs` there, already
    predicted); returns (metrics, predictions)."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.training import metrics as m

    out = (
        _predict_outputs(model, data.inputs, batch_size) if outputs is None else outputs
    )
    if task == "classify":
        kind = options.get("label_kind", "single")
        if kind == "regression":
            values = np.asarray(out["probabilities"]).reshape(-1)
            result = m.regression_metrics(data.targets["labels"], values)
            return result, values.tolist()
        probabilities = np.asarray(out["probabilities"])
        if kind == "multi_label":
            threshold = options.get("threshold", 0.5)
            predicted = [
                tasks.labels_at_threshold(p, labels, threshold) for p in probabilities
            ]
            truth = [r["label"] for r in data.records]
            result = m.multilabel_metrics(truth, predicted, labels)
            result["threshold"] = threshold
            return result, predicted
        predicted = [labels[i] for i in probabilities.argmax(-1)]
        truth = [r["label"] for r in data.records]
        return m.classification_metrics(truth, predicted, labels), predicted
    if task == "tag":
        scheme = options.get("scheme", "BIO")
        ids = decode_tags(
            data.features,
            np.asarray(out["logits"]),
            [len(words) for words, _ in data.records],
            labels,
            scheme,
            transition_scores(model),
        )
        predicted = [[labels[i] for i in sentence] for sentence in ids]
        truth = [t for _, t in data.records]
        return m.entity_metrics(truth, predicted, scheme), predicted
    answers = tasks.decode_squad(
        data.features,
        np.asarray(out["start_logits"]),
        np.asarray(out["end_logits"]),
        data.records,
        null_threshold=options.get("null_threshold", 0.0),
    )
    predictions = {qid: a["text"] for qid, a in answers.items()}
    references = {ex.id: [t for t, _ in ex.answers] for ex in data.records}
    return m.squad_metrics(predictions, references), answers


def decode_tags(
    features,
    logits: np.ndarray,
    num_words: Sequence[int],
    labels: Sequence[str],
    scheme: str,
    transition_scores=None,
) -> list[list[int]]:
    """Per-word tag ids by Viterbi over the word scores, allowing only sequences the
    tag scheme permits (no `I-X` after `O` or after another type). With a CRF's
    `transition_scores` (start, transitions, end), its logits are the emissions and
    the learned transitions join the path score."""
    from keras_bert_lite.data import tasks

    if transition_scores is None:
        shifted = logits - logits.max(-1, keepdims=True)
        scores = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    else:
        scores = logits
    start, trans, end = tasks.allowed_transitions(labels, scheme)
    return [
        tasks.viterbi_decode(w, start, trans, end, transition_scores)
        for w in tasks.word_scores(features, scores, num_words)
    ]


def tag_texts(
    texts: Sequence[str],
    tokenizer,
    seq_len: int,
    labels: Sequence[str],
    scheme: str,
    logits_of: Callable[[dict], Any],
    transitions=None,
) -> list[dict]:
    """Entities with character offsets in raw texts, as `kbl predict` finds them:
    the texts' words (`tasks.words_with_offsets`), windowed as training windows
    them, scored by `logits_of` (the three id inputs [N, T] -> logits [N, T, K])
    and decoded by `decode_tags` (with a CRF's `transitions`)."""
    from keras_bert_lite.data import tasks

    offsets = [tasks.words_with_offsets(text) for text in texts]
    words = [
        [t[s:e] for s, e in spans] for t, spans in zip(texts, offsets, strict=True)
    ]
    features = tasks.encode_tagging(words, None, tokenizer, seq_len, labels)
    ids = decode_tags(
        features,
        np.asarray(logits_of(features.inputs())),
        [len(w) for w in words],
        labels,
        scheme,
        transitions,
    )
    return [
        {
            "text": text,
            "entities": entities(text, spans, [labels[i] for i in tags], scheme),
        }
        for text, spans, tags in zip(texts, offsets, ids, strict=True)
    ]


def entities(
    text: str, spans: Sequence[tuple[int, int]], tags: Sequence[str], scheme: str
) -> list[dict]:
    """The entities of tagged words (`spans`: their character spans in `text`):
    `{"type", "start", "end", "text"}`, character offsets."""
    from keras_bert_lite.training.metrics import extract_entities

    return [
        {
            "type": kind,
            "start": spans[s][0],
            "end": spans[e - 1][1],
            "text": text[spans[s][0] : spans[e - 1][1]],
        }
        for kind, s, e in extract_entities(tags, scheme)
    ]


def transition_scores(model):
    """A tagger's CRF scores (start, transitions, end), or None without a CRF."""
    scores = getattr(model, "transition_scores", None)
    return scores() if callable(scores) else None


def _main_metric(task: str, metrics: dict, kind: str = "single") -> float:
    if task == "classify":
        if kind == "regression":
            return -metrics["mse"]
        return metrics["micro_f1"] if kind == "multi_label" else metrics["macro_f1"]
    return metrics["f1"]


def _load_backbone(
    init: str,
    model: str,
    vocab: str | None,
    lowercase: bool,
    dropout: float | None = None,
    dtype: str = "float32",
):
    """(backbone, tokenizer, model config) from a run directory or, for "random", a
    preset/config.json and a vocabulary file; `dropout` replaces the encoder's and
    `dtype` is its Keras dtype policy (the heads built on it follow it)."""
    from keras_bert_lite.models import BertBackbone
    from keras_bert_lite.text import BertTokenizer, read_vocabulary

    if init == "random":
        if vocab is None:
            raise KblError(
                "--init random needs --vocab FILE (learn one with kbl vocab)"
            )
        tokenizer = BertTokenizer(read_vocabulary(vocab), lowercase)
        if os.path.isfile(model):
            from keras_bert_lite.io import read_json

            data = read_json(model)
            if isinstance(data, dict) and "kbl_run" in data:  # a run's config.json
                data = data.get("model")
            config = BertConfig.from_dict(data, where=model)
            if config.vocabulary_size != tokenizer.vocabulary_size:
                raise KblError(
                    f"{model}: vocabulary_size {config.vocabulary_size} does not "
                    f"match the {tokenizer.vocabulary_size} tokens of {vocab}; use "
                    "a vocabulary of that size or change the model's "
                    "vocabulary_size"
                )
        else:
            config = BertConfig.from_preset(
                model, vocabulary_size=tokenizer.vocabulary_size
            )
        if dropout is not None:
            config = dataclasses.replace(config, dropout=dropout)
        return BertBackbone.from_bert_config(config, dtype=dtype), tokenizer, config
    source = run_dir.load(init)
    tokenizer = run_dir.load_tokenizer(init)
    backbone = source.backbone
    config = backbone.bert_config()
    other_dropout = dropout is not None and dropout != config.dropout
    if other_dropout or dtype != backbone.dtype_policy.name:
        # Dropout and the dtype policy are constructor arguments: the same encoder,
        # rebuilt, with the same (float32) weights.
        if other_dropout:
            config = dataclasses.replace(config, dropout=dropout)
        rebuilt = BertBackbone.from_bert_config(config, dtype=dtype)
        rebuilt.set_weights(backbone.get_weights())
        backbone = rebuilt
    return backbone, tokenizer, config


def default_learning_rate(hidden_dim: int) -> float:
    """Fine-tuning's peak learning rate for a model of this width: 1e-4 up to 256
    hidden units (BERT-tiny to -mini), 5e-5 up to 512, 2e-5 above (BERT-base)."""
    return 1e-4 if hidden_dim <= 256 else 5e-5 if hidden_dim <= 512 else 2e-5


def finetune(
    task: str,
    train: str,
    dev: str,
    out: str,
    *,
    init: str = "random",
    model: str = "mini",
    vocab: str | None = None,
    lowercase: bool = True,
    seq_len: int = 128,
    batch_size: int = 32,
    epochs: int = 3,
    learning_rate: float | None = None,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    layer_decay: float = 1.0,
    patience: int = 2,
    doc_stride: int | None = None,
    max_query_len: int = 64,
    max_train: int | None = None,
    dropout: float = 0.1,
    backbone_dropout: float | None = None,
    crf: bool = False,
    pooling: str = "cls",
    seed: int = 0,
    resume: bool = False,
    precision: str = "auto",
    jit_compile: bool | str = "auto",
    strategy: str = "auto",
    tpu: str | None = None,
    accumulation: int = 1,
    log: Callable[[str], None] = print,
    verbose: int | str = "auto",
) -> FinetuneResult:
    """Fine-tunes a BERT on a task file, keeping the best dev checkpoint.

    Args:
        task: "classify", "tag" or "qa".
        train, dev: task files (see the module docstring).
        out: the run directory to write.
        init: a run directory to start from (pretrained, imported or fine-tuned), or
            "random" for a randomly initialised baseline (needs `vocab`).
        model: preset or config.json, for `init="random"` only.
        vocab, lowercase: the vocabulary for `init="random"`.
        seq_len: tokens per example (QA windows too).
        batch_size, epochs, learning_rate, warmup, weight_decay: optimisation;
            the default learning rate follows the model size (1e-4 for up to 256
            hidden units, 5e-5 up to 512, 2e-5 above).
        layer_decay: layer-wise learning-rate decay: the head (and pooler) train at
            `learning_rate`, the top encoder layer at `layer_decay` times it, each
            layer below at `layer_decay` times the one above, the embeddings lowest.
            1 (the default): one rate for every layer.
        patience: stop after this many epochs without a better dev score.
        doc_stride, max_query_len: QA windowing: context pieces between window
            starts (None: `tasks.default_doc_stride`, 128 where a window holds
            256 or more) and the question pieces kept.
        max_train: train on a seeded random sample of this many training records
            (all of them when None), for budgets and learning curves; the labels
            are those of the whole training file.
        dropout: before the task head.
        backbone_dropout: the encoder's dropout while fine-tuning; None keeps the
            model's (a run pretrained without dropout, as short CPU budgets favour,
            is usually fine-tuned with 0.1).
        crf: tagging only: a linear-chain CRF on the tag scores (sequence loss,
            learned transitions used in decoding).
        pooling: classification only: "cls" (the pooled [CLS] output, BERT's
            classifier) or "mean" (the token outputs averaged over real tokens).
        seed: weight initialisation, dropout and shuffling.
        resume: continue an interrupted run in `out` (same arguments) from its
            last epoch checkpoint; with nothing to resume, start it.
        precision, jit_compile: as for pretraining ("auto" chooses by device). The
            dev scores of training are computed in `precision`; evaluate, predict
            and export rebuild the model in float32 (mixed-precision weights are
            float32), so their scores may differ from a bfloat16 run's in the last
            digits.
        strategy: as for pretraining; under "multiworker" every worker runs this
            call and the chief writes the run directory.
        tpu: with strategy "tpu" or "auto": the TPU's name or grpc:// address.
        accumulation: micro-batches of batch_size / accumulation per optimizer step.
        log: where progress lines go.
        verbose: Keras progress display.

    Returns:
        A `FinetuneResult` with the best dev metrics.
    """
    import keras

    from keras_bert_lite.training.optimizer import bert_optimizer, layer_decay_factors
    from keras_bert_lite.training.strategy import (
        Workers,
        describe,
        fit_under,
        get_strategy,
        resolve_jit_compile,
        resolve_precision,
    )

    started = time.time()
    if task not in TASKS:
        raise KblError(f"unknown task '{task}': choose one of {', '.join(TASKS)}")
    if crf and task != "tag":
        raise KblError("--crf applies to token classification (--task tag) only")
    if pooling != "cls" and task != "classify":
        raise KblError("--pooling applies to classification (--task classify) only")
    if pooling not in POOLING:
        raise KblError(f"--pooling {pooling}: choose one of {', '.join(POOLING)}")
    TrainConfig(
        batch_size=batch_size,
        strategy=strategy,
        accumulation=accumulation,
        layer_decay=layer_decay,
    )
    # The strategy first: the multi-worker one configures the TensorFlow runtime.
    distribution = get_strategy(strategy, tpu=tpu)
    workers = Workers.of(distribution)
    import tensorflow as tf

    from keras_bert_lite.data import tasks

    config_path = os.path.join(out, run_dir.CONFIG)
    if os.path.exists(config_path) and not resume and workers.chief:
        raise KblError(
            f"{out}: already holds a run; continue it with --resume or choose "
            "another --out"
        )
    keras.utils.set_random_seed(seed)
    precision = resolve_precision(precision)
    with distribution.scope():  # variables are created under the strategy
        backbone, tokenizer, model_config = _load_backbone(
            init, model, vocab, lowercase, backbone_dropout, precision
        )
    if seq_len > model_config.max_sequence_length:
        raise KblError(
            f"seq_len {seq_len} is longer than the model's "
            f"max_sequence_length {model_config.max_sequence_length}"
        )

    train_records, dev_records = _read(task, train), _read(task, dev)
    if not train_records:
        raise KblError(f"{train}: no records")
    if os.path.realpath(train) == os.path.realpath(dev):
        log(
            f"note: --dev is the training file ({dev}): its scores, the best epoch "
            "and early stopping measure how well the model fits its training data, "
            "not how it does on text it has not seen; pass a held-out file"
        )
    # The task's labels are the training file's, sampled or not: a --max-train
    # sample that happens to miss a rare tag still gives the model an output for it
    # (and dev records that carry it are scored, not refused).
    labels = _labels(task, train_records)
    kind = _label_kind(train_records) if task == "classify" else "single"
    # So is the tag scheme: a sample that misses the file's E-/S- tags is BIOES.
    scheme = None
    if task == "tag":
        scheme = tasks.detect_scheme(
            [t for _, t in train_records], train, [r.lines for r in train_records]
        )
    train_records = tasks.sample_records(train_records, max_train, seed)
    if kind == "regression":
        labels = []
        tasks.regression_targets(dev_records, dev)
    elif task == "classify":
        tasks.check_labels(dev_records, labels, dev)
    elif task == "tag":
        found = tasks.first_unknown_label(dev_records, labels)
        if found is not None:
            line, tag = found
            others = sorted(
                {t for _, tags in dev_records for t in tags} - {*labels, tag}
            )
            also = f" (nor do {', '.join(others)})" if others else ""
            raise KblError(
                f"{dev}:{line}: tag {tag!r} does not occur in {train}{also}; the "
                "model cannot learn it: fix the tag, or add training sentences "
                "that carry it"
            )
    # The run being resumed, read once: its settings are checked against these below.
    recorded = (
        run_dir.read_config(out) if resume and os.path.exists(config_path) else None
    )
    if doc_stride is None and recorded is not None:
        # The run's own: one started before the default followed seq_len resumes.
        doc_stride = (recorded.get("task_options") or {}).get("doc_stride")
    if doc_stride is None:
        qa = task == "qa"
        doc_stride = tasks.default_doc_stride(seq_len, max_query_len) if qa else 128
    elif task == "qa" and doc_stride > seq_len - max_query_len - 3:
        log(
            f"note: doc_stride {doc_stride} is more than a window's "
            f"{seq_len - max_query_len - 3} context pieces (seq_len {seq_len}, "
            f"max_query_len {max_query_len}): windows do not overlap, so an answer "
            "across a window's edge is in none of them"
        )
    options = {
        "seq_len": seq_len,
        "doc_stride": doc_stride,
        "max_query_len": max_query_len,
        "label_kind": kind,
    }
    if task == "tag":
        options["scheme"] = scheme
        tasks.check_scheme(dev_records, options["scheme"], dev)
        options["crf"] = bool(crf)
    elif task == "classify":
        options["pooling"] = pooling
        options["pair"] = "text_a" in train_records[0]
        _check_pairs(dev_records, options["pair"], dev, f"{train} holds")
    log(
        f"{task}: {len(train_records)} training and {len(dev_records)} dev records"
        + (f", {len(labels)} labels" if labels else "")
        + (" (multi-label)" if kind == "multi_label" else "")
        + (_score_range(train_records) if kind == "regression" else "")
    )
    train_data = _encode(task, train_records, tokenizer, labels, options)
    dev_data = _encode(task, dev_records, tokenizer, labels, options)

    if learning_rate is None:
        learning_rate = default_learning_rate(model_config.hidden_dim)
    n = len(train_data.inputs["token_ids"])
    micro_batch = batch_size // accumulation
    if micro_batch % distribution.num_replicas_in_sync:
        raise KblError(
            f"batch size {batch_size} / accumulation {accumulation} cannot be split "
            f"evenly over {distribution.num_replicas_in_sync} replicas"
        )
    steps_per_epoch = max(1, math.ceil(n / micro_batch))  # micro-batches
    total_steps = max(1, steps_per_epoch * epochs // accumulation)

    rate_factors = layer_decay_factors(backbone, layer_decay)
    with distribution.scope():
        model = run_dir.build_task_model(
            task,
            backbone,
            len(labels),
            kind,
            dropout,
            crf=options.get("crf", False),
            pooling=pooling,
        )
        model.compile(
            optimizer=bert_optimizer(
                learning_rate,
                total_steps,
                warmup,
                weight_decay,
                accumulation=accumulation,
                rate_factors=rate_factors,
            ),
            jit_compile=resolve_jit_compile(
                jit_compile, precision, distribution, total_steps
            ),
        )
        xla = model.jit_compile

    elements = (train_data.inputs, train_data.targets)
    if train_data.weights is not None:
        elements += (train_data.weights,)
    dataset = (
        tf.data.Dataset.from_tensor_slices(elements)
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(micro_batch)
        .prefetch(tf.data.AUTOTUNE)
    )
    fit_under(model, distribution, dataset.element_spec)

    if workers.chief:
        os.makedirs(out, exist_ok=True)
    config = {
        "kbl_run": CONFIG_VERSION,
        "task": task,
        "model": model_config.to_dict(),
        "data": DataConfig(
            seq_len=max(seq_len, 8), lowercase=tokenizer.lowercase, nsp=False
        ).to_dict(),
        "train": TrainConfig(
            batch_size=batch_size,
            epochs=epochs,
            learning_rate=learning_rate,
            warmup=warmup,
            weight_decay=weight_decay,
            layer_decay=layer_decay,
            precision=precision,
            strategy=strategy,
            jit_compile=xla,
            seed=seed,
            accumulation=accumulation,
        ).to_dict(),
        "task_options": {**options, "dropout": dropout, "num_labels": len(labels)},
        "init": os.path.abspath(init) if init != "random" else "random",
        "train_file": os.path.abspath(train),
        "dev_file": os.path.abspath(dev),
        "max_train": max_train,
    }
    from keras_bert_lite.io import remove_temporaries
    from keras_bert_lite.training.callbacks import (
        NO_SEED_STATES,
        HistoryCSV,
        RunCheckpoint,
        StopOnNonFinite,
        TensorBoard,
        latest_checkpoint,
        restore_seed_states,
    )

    checkpoint_dir = os.path.join(out, "checkpoints")
    best = {"score": -math.inf, "metrics": None, "epoch": -1, "stopped": False}
    found = None
    if recorded is not None:
        _check_same_run(recorded, config, config_path)
        for directory in (out, checkpoint_dir):
            remove_temporaries(directory)
        found = latest_checkpoint(checkpoint_dir)
    initial_epoch = 0
    seconds_before = 0.0
    if found:
        state = found[1]
        seconds_before = state.get("seconds", 0.0)
        with distribution.scope():
            model.optimizer.build(model.trainable_variables)
            model.load_weights(found[0])
            if not restore_seed_states(model, state.get("seed_states")):
                log(NO_SEED_STATES)
        initial_epoch = state["epoch"]
        best.update(state.get("best") or {})
        if "threshold" in state:
            options["threshold"] = state["threshold"]
            config["task_options"]["threshold"] = state["threshold"]
        log(f"resumed from {found[0]} (epoch {initial_epoch})")
    if workers.chief:  # the other workers compute the same and write nothing
        tokenizer.save(out)
        if labels:
            tasks.write_labels(os.path.join(out, "labels.txt"), labels)

    weights_path = os.path.join(out, run_dir.WEIGHTS)
    progress = {"epochs": initial_epoch}

    class DevEvaluation(keras.callbacks.Callback):
        """Scores dev with the task metric after each epoch; keeps the best weights."""

        def on_epoch_end(self, epoch, logs=None):
            outputs = None
            if task == "classify" and kind == "multi_label":
                # Predicted once: the threshold is tuned on the outputs it scores.
                outputs = _predict_outputs(self.model, dev_data.inputs, 64)
                truth = np.asarray(dev_data.targets["labels"])
                from keras_bert_lite.training import metrics as m

                options["threshold"] = m.best_threshold(
                    np.asarray(outputs["probabilities"]), truth
                )
            metrics, _ = score(
                task, self.model, dev_data, labels, options, outputs=outputs
            )
            value = _main_metric(task, metrics, kind)
            for key in (
                *("accuracy", "macro_f1", "f1", "exact", "micro_f1"),
                *("mse", "pearson", "spearman"),
            ):
                if key in metrics and logs is not None:
                    logs[f"dev_{key}"] = metrics[key]
            log(
                f"epoch {epoch + 1}: dev "
                + ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)
                )
            )
            if value > best["score"]:
                best.update(score=value, metrics=metrics, epoch=epoch + 1)
                config["task_options"]["threshold"] = options.get("threshold", 0.5)
                if workers.chief:
                    with atomic_path(weights_path, suffix=".weights.h5") as tmp:
                        self.model.save_weights(tmp)
                    write_json(config_path, config)
            progress["epochs"] = epoch + 1
            if epoch + 1 - best["epoch"] >= patience:  # early stopping
                best["stopped"] = True
                self.model.stop_training = True

    callbacks = [StopOnNonFinite(checkpoint_dir), DevEvaluation()]
    if workers.chief:
        callbacks += [
            HistoryCSV(os.path.join(out, "history.csv"), keep_before=initial_epoch),
            # After DevEvaluation, so the dev scores are among the epoch's curves.
            TensorBoard(
                os.path.join(out, "tensorboard"), update_freq=50, write_graph=False
            ),
            # Last: the epoch's best weights and history are on disk when state.json
            # names its checkpoint (and the best score that goes with them).
            RunCheckpoint(
                checkpoint_dir,
                state=lambda: {
                    "best": best,
                    "threshold": options.get("threshold", 0.5),
                },
                started=started,
                seconds_before=seconds_before,
            ),
        ]
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    if rate_factors:
        lowest = learning_rate * min(rate_factors.values())  # the embeddings'
        rate = (
            f"{learning_rate:g} (layer decay {layer_decay:g}, embeddings {lowest:.3g})"
        )
    else:
        rate = f"{learning_rate:g}"
    log(
        f"fine-tuning ({model.count_params():,} parameters) for up to {epochs} "
        f"epoch{'s' if epochs != 1 else ''} of {steps_per_epoch} steps, "
        f"learning rate {rate}, "
        f"precision {precision}, XLA {xla}, {describe(distribution, workers)} -> {out}"
    )
    if initial_epoch < epochs and not best["stopped"]:
        # Every iterator opened on the dataset draws the next shuffle order from the
        # seed, and Keras's EpochIterator opens two an epoch (one as the epoch starts,
        # one more when it sees the data end). Opening those of the epochs a resumed
        # run skips puts it on the order (and, with the restored seed states, the
        # dropout masks) of a run never stopped: tests/test_finetune.py checks that
        # the weights come out bit-identical.
        for _ in range(2 * initial_epoch):
            iter(dataset)
        model.fit(
            dataset,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
    result = FinetuneResult(
        out,
        best["metrics"],
        progress["epochs"],
        seconds_before + time.time() - started,
    )
    if workers.chief:
        write_json(
            os.path.join(out, "metrics.json"),
            {
                "dev": best["metrics"],
                "best_epoch": best["epoch"],
                "epochs": result.epochs,
                "precision": precision,
                "xla": xla,
                "seconds": result.seconds,
            },
        )
    log(f"done in {result.seconds:.0f}s; best dev epoch {best['epoch']}")
    return result


# Train settings a resumed run may be given differently: where and how it runs, not
# what it computes (accumulation splits the same batch into micro-batches).
_RUNTIME = (
    "precision",
    "strategy",
    "jit_compile",
    "accumulation",
    "steps_per_execution",
)


def _check_same_run(recorded: dict, config: dict, path: str) -> None:
    """Raises KblError naming the first setting a resumed run was given differently."""
    # Read through TrainConfig: a run from before a setting existed has its default
    # (runs from before --layer-decay trained at one rate).
    train = TrainConfig.from_dict(recorded.get("train") or {}, path).to_dict()
    settings = [
        (key, recorded.get(key), config.get(key))
        for key in ("task", "train_file", "dev_file", "init", "max_train")
    ] + [
        (key, train[key], config["train"][key]) for key in train if key not in _RUNTIME
    ]
    for key, theirs, mine in settings:
        if theirs != mine:
            raise KblError(
                f"{path}: the run has {key} {theirs!r}, not {mine!r}; resume it "
                "with the arguments it started with"
            )
    for section in ("model", "task_options"):
        mine = {k: v for k, v in config[section].items() if k != "threshold"}
        theirs = {
            k: v for k, v in (recorded.get(section) or {}).items() if k != "threshold"
        }
        if section == "task_options" and config["task"] == "classify":
            theirs.setdefault("pooling", "cls")  # runs from before --pooling
            # Runs from before the pair flag: the same train_file (checked above).
            theirs.setdefault("pair", mine.get("pair"))
        if mine != theirs:
            fields = "; ".join(
                f"{key}: {theirs.get(key)!r} in the run, {mine.get(key)!r} given"
                for key in sorted(set(mine) | set(theirs))
                if mine.get(key) != theirs.get(key)
            )
            raise KblError(
                f"{path}: the run's {section} differs from these arguments "
                f"({fields}); resume it with the arguments it started with"
            )


def _check_pairs(records: list[dict], pair: bool, path: str, whose: str) -> None:
    """Raises KblError when `path`'s records are pairs and the model's are single
    texts, or the other way round (`whose`: "RUN classifies", "TRAIN holds")."""
    if records and ("text_a" in records[0]) != pair:
        theirs, mine = "sentence pairs (text_a, text_b)", "single texts (text)"
        if pair:
            theirs, mine = mine, theirs
        raise KblError(
            f"{path}:{records[0].get('line', 1)}: {theirs}, but {whose} {mine}; "
            "give the file the fields the model was trained on"
        )


def _task_of(run: str) -> tuple[dict, str]:
    config = run_dir.read_config(run)
    if config.get("task") not in TASKS:
        raise KblError(f"{run}: not a fine-tuned run (task {config.get('task')!r})")
    return config, config["task"]


def read_scored(
    run: str,
    task: str,
    pair: bool,
    labels: Sequence[str],
    path: str,
    scheme: str = "BIO",
    kind: str = "single",
) -> list:
    """The labelled records of `path` that the fine-tuned `run` is to be scored on:
    in its task's format, pairs if it classifies pairs, only labels it knows (for a
    regression model, of `kind` "regression", numbers), tags in its `scheme`
    (errors name the file and line)."""
    from keras_bert_lite.data import tasks

    records = _read(task, path)
    if task == "classify":
        _check_pairs(records, pair, path, f"{run} classifies")
        if kind == "regression":
            tasks.regression_targets(records, path)
    if labels:
        tasks.check_labels(records, labels, path)
    if task == "tag":
        tasks.check_scheme(records, scheme, path)
    return records


def evaluate(run: str, data: str, batch_size: int = 64) -> dict:
    """The task metrics of a fine-tuned run on a labelled file."""
    from keras_bert_lite.data import tasks

    config, task = _task_of(run)
    model = run_dir.load(run)
    tokenizer = run_dir.load_tokenizer(run)
    labels = (
        tasks.read_labels(os.path.join(run, "labels.txt"))
        if config["task_options"].get("num_labels")
        else []
    )
    pair = task == "classify" and run_dir.classifies_pairs(run, config)
    scheme = config["task_options"].get("scheme", "BIO")
    kind = config["task_options"].get("label_kind", "single")
    records = read_scored(run, task, pair, labels, data, scheme, kind)
    encoded = _encode(task, records, tokenizer, labels, config["task_options"])
    metrics, _ = score(task, model, encoded, labels, config["task_options"], batch_size)
    return metrics


def predict(
    run: str,
    texts: Sequence[str],
    batch_size: int = 64,
    contexts: Sequence[str] | None = None,
    pairs: Sequence[str] | None = None,
    threshold: float | None = None,
) -> list[dict]:
    """Predictions on raw text: labels with probabilities (multi-label: the labels
    at or over the threshold tuned on dev, or `threshold`; see
    `tasks.classification_predictions`), entities with character offsets, or (QA:
    `texts` are questions, each on its `contexts` entry) answers with character
    offsets into the context ("" and -1 when the model finds none). `pairs`: the
    second text of each of `texts`, for a sentence-pair classifier."""
    from keras_bert_lite.data import tasks

    config, task = _task_of(run)
    options = config["task_options"]
    kind = options.get("label_kind", "single") if task == "classify" else task
    threshold = tasks.decision_threshold(
        threshold, options.get("threshold", 0.5), kind, run
    )
    pair = task == "classify" and run_dir.classifies_pairs(run, config)
    if pair and (pairs is None or len(pairs) != len(texts)):
        raise KblError(
            f"{run} classifies sentence pairs: give the second text of each "
            "(kbl predict --text-b, once per text; or --input a JSONL/CSV/TSV file "
            "with text_a and text_b)"
        )
    if pairs is not None and not pair:
        what = "classifies single texts" if task == "classify" else f"is a {task} run"
        raise KblError(f"{run} {what}: it takes no second texts (--text-b, text_b)")
    model = run_dir.load(run)
    tokenizer = run_dir.load_tokenizer(run)
    labels = (
        tasks.read_labels(os.path.join(run, "labels.txt"))
        if options.get("num_labels")
        else []
    )
    if task == "classify":
        records = (
            [{"text_a": a, "text_b": b} for a, b in zip(texts, pairs, strict=True)]
            if pair
            else [{"text": t} for t in texts]
        )
        encoded = tasks.encode_classification(records, tokenizer, options["seq_len"])
        inputs = {k: encoded[k] for k in ("token_ids", "segment_ids", "padding_mask")}
        results = tasks.classification_predictions(
            texts,
            _predict_outputs(model, inputs, batch_size)["probabilities"],
            labels,
            kind,
            threshold,
            pairs if pair else None,
        )
        cuts = tasks.classification_cuts(
            tokenizer, texts, options["seq_len"], pairs if pair else None
        )
        for result, cut in zip(results, cuts, strict=True):
            result.update(cut)
        return results
    if task == "tag":
        return tag_texts(
            texts,
            tokenizer,
            options["seq_len"],
            labels,
            options.get("scheme", "BIO"),
            lambda inputs: _predict_outputs(model, inputs, batch_size)["logits"],
            transition_scores(model),
        )
    if contexts is None or len(contexts) != len(texts):
        raise KblError(
            "qa predictions need one context per question: give --question and "
            "--context, or --input SQUAD.json"
        )
    examples = [
        tasks.QAExample(id=str(i), question=q, context=c)
        for i, (q, c) in enumerate(zip(texts, contexts, strict=True))
    ]
    features = tasks.encode_squad(
        examples,
        tokenizer,
        options["seq_len"],
        options["doc_stride"],
        options["max_query_len"],
    )
    logits = _predict_outputs(model, features.inputs(), batch_size)
    answers = tasks.decode_squad(
        features,
        logits["start_logits"],
        logits["end_logits"],
        examples,
        null_threshold=options.get("null_threshold", 0.0),
    )
    return [{"question": ex.question, **answers[ex.id]} for ex in examples]
