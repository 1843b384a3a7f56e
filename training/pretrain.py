"""`pretrain()`: raw corpus -> vocabulary -> masked LM (+ NSP) -> run directory."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

from keras_bert_lite import run as run_dir
from keras_bert_lite.config import CONFIG_VERSION, BertConfig, DataConfig, TrainConfig
from keras_bert_lite.errors import KblError
from keras_bert_lite.io import remove_temporaries, write_json


@dataclasses.dataclass
class PretrainResult:
    run: str  # the run directory
    steps: int  # optimizer steps taken in total
    metrics: dict  # final held-out metrics (val_*) and last training metrics
    tokens_per_second: float  # padded tokens (batch x seq_len) per second of training
    seconds: float  # wall time of this call


def _split_overrides(overrides: dict) -> tuple[dict, dict, dict]:
    fields = [
        {f.name for f in dataclasses.fields(c)}
        for c in (BertConfig, DataConfig, TrainConfig)
    ]
    parts: tuple[dict, dict, dict] = ({}, {}, {})
    for key, value in overrides.items():
        for names, part in zip(fields, parts, strict=True):
            if key in names:
                part[key] = value
                break
        else:
            raise KblError(f"pretrain(): unknown option '{key}'")
    return parts


def _check_seq_len(data_config: DataConfig, model_config: BertConfig) -> None:
    if data_config.seq_len > model_config.max_sequence_length:
        raise KblError(
            f"seq_len {data_config.seq_len} is longer than the model's "
            f"max_sequence_length {model_config.max_sequence_length}; lower "
            "--seq-len or use a model with more position embeddings"
        )


def pretrain(
    corpus: Sequence[str] | str | None,
    out: str,
    *,
    vocab: str | None = None,
    model: str | BertConfig = "mini",
    vocabulary_size: int = 8192,
    resume: bool = False,
    corpus_format: str = "auto",
    log: Callable[[str], None] = print,
    verbose: int | str = "auto",
    **options,
) -> PretrainResult:
    """Pretrains a BERT with `model.fit` and writes a run directory.

    Args:
        corpus: corpus files, directories or globs; None uses the built-in default data.
        out: the run directory to write (or to continue with `resume=True`).
        vocab: a vocab.txt to use; None learns one of `vocabulary_size` from the corpus.
        model: a preset name (tiny, mini, small, medium, base) or a `BertConfig`.
        vocabulary_size: size of the vocabulary to learn when `vocab` is None.
        resume: continue the interrupted run in `out` from its last checkpoint.
        corpus_format: "auto", "bert", "jsonl" or "text".
        log: where progress lines go.
        verbose: Keras progress display (1 bar, 2 one line per epoch, "auto").
        **options: any field of `DataConfig` or `TrainConfig` (seq_len, nsp,
            whole_word_mask, batch_size, steps, epochs, learning_rate, precision,
            seed...).

    Returns:
        A `PretrainResult`.
    """
    import keras
    from keras_bert_lite.training.callbacks import (
        HistoryCSV,
        RunCheckpoint,
        StopAtStep,
        StopOnNonFinite,
        Throughput,
        latest_checkpoint,
    )
    from keras_bert_lite.training.optimizer import adamw
    from keras_bert_lite.training.strategy import (
        get_strategy,
        resolve_jit_compile,
        resolve_precision,
    )

    from keras_bert_lite.data import default_data
    from keras_bert_lite.data.corpus import (
        CorpusStats,
        expand_paths,
        read_documents,
        require_text,
    )
    from keras_bert_lite.data.pretraining import count_instances, pretraining_dataset
    from keras_bert_lite.text import BertTokenizer, learn_vocabulary, read_vocabulary

    started = time.time()
    config_path = os.path.join(out, run_dir.CONFIG)
    if resume:
        if not os.path.exists(config_path):
            raise KblError(
                f"{out}: nothing to resume (no {run_dir.CONFIG}); start the run "
                "without --resume"
            )
        config = run_dir.read_config(out)
        model_config = BertConfig.from_dict(config["model"], f"{config_path}: model")
        data_config = DataConfig.from_dict(config["data"], f"{config_path}: data")
        if "train" not in config:
            raise KblError(f"{config_path}: the 'train' section is missing")
        train_config = TrainConfig.from_dict(config["train"], f"{config_path}: train")
        files = config.get("corpus")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise KblError(f"{config_path}: 'corpus' must be a list of file paths")
        corpus_format = config.get("corpus_format", corpus_format)
        tokenizer = run_dir.load_tokenizer(out)
    else:
        if os.path.exists(config_path):
            raise KblError(
                f"{out}: already holds a run; continue it with --resume or "
                "choose another --out"
            )
        model_over, data_over, train_over = _split_overrides(options)
        data_config = DataConfig(**data_over)
        train_config = TrainConfig(**train_over)
        if corpus is None:
            corpus = [default_data.pretraining_corpus(log=log)]
        files = expand_paths(corpus)
        require_text(files, corpus_format)
        if vocab is not None:
            tokenizer = BertTokenizer(read_vocabulary(vocab), data_config.lowercase)
        else:
            log(
                f"learning a {vocabulary_size}-token WordPiece vocabulary from "
                f"{len(files)} file(s) ..."
            )
            stats = CorpusStats()
            tokens = learn_vocabulary(
                (s for doc in read_documents(files, corpus_format, stats) for s in doc),
                vocabulary_size,
                lowercase=data_config.lowercase,
            )
            tokenizer = BertTokenizer(tokens, data_config.lowercase)
            log(
                f"vocabulary: {tokenizer.vocabulary_size} tokens from "
                f"{stats.documents} documents, {stats.sentences} sentences"
            )
        if isinstance(model, BertConfig):
            model_config = dataclasses.replace(model, **model_over)
        elif os.path.isfile(str(model)):
            from keras_bert_lite.io import read_json

            model_config = BertConfig.from_dict(read_json(model), where=str(model))
        else:
            model_config = BertConfig.from_preset(
                str(model), vocabulary_size=tokenizer.vocabulary_size, **model_over
            )
        if model_config.vocabulary_size != tokenizer.vocabulary_size:
            raise KblError(
                f"{model if isinstance(model, str) else 'model'}: vocabulary_size "
                f"{model_config.vocabulary_size} does not match the vocabulary's "
                f"{tokenizer.vocabulary_size} tokens ({vocab or 'learned'}); use a "
                "vocabulary of that size or change the model's vocabulary_size"
            )
        _check_seq_len(data_config, model_config)
        if train_config.steps is None and train_config.epochs is None:
            train_config.epochs = 1
        config = {
            "kbl_run": CONFIG_VERSION,
            "task": "pretraining",
            "model": model_config.to_dict(),
            "data": data_config.to_dict(),
            "train": train_config.to_dict(),
            "corpus": [os.path.abspath(f) for f in files],
            "corpus_format": corpus_format,
        }
        os.makedirs(out, exist_ok=True)
        tokenizer.save(out)
        write_json(config_path, config)

    _check_seq_len(data_config, model_config)
    # Deterministic weight initialisation and dropout for a given seed.
    keras.utils.set_random_seed(train_config.seed)
    strategy = get_strategy(train_config.strategy)
    precision = resolve_precision(train_config.precision)
    jit_compile = resolve_jit_compile(train_config.jit_compile, precision)

    batch = train_config.batch_size
    if train_config.steps is not None:
        total_steps = train_config.steps
    else:
        per_pass = count_instances(
            files,
            tokenizer,
            data_config,
            train_config.seed,
            split="train",
            corpus_format=corpus_format,
        )
        if per_pass < batch:
            raise KblError(
                f"the corpus gives only {per_pass} training examples, fewer than "
                f"one batch of {batch}; lower --batch-size or add text"
            )
        total_steps = train_config.epochs * (per_pass // batch)
    eval_every = train_config.eval_every or max(1, math.ceil(total_steps / 10))
    num_epochs = math.ceil(total_steps / eval_every)

    checkpoint_dir = os.path.join(out, "checkpoints")
    initial_epoch = 0
    found = None
    if resume:  # what a killed run left half-written goes; the rest is whole
        for directory in (out, checkpoint_dir):
            remove_temporaries(directory)
        found = latest_checkpoint(checkpoint_dir)
    if found:
        initial_epoch = found[1]["epoch"]

    def dataset(split: str, repeat: bool):
        return pretraining_dataset(
            files,
            tokenizer,
            batch_size=batch,
            seed=train_config.seed,
            config=data_config,
            split=split,
            repeat=repeat,
            drop_remainder=repeat,
            corpus_format=corpus_format,
            resume_pass=initial_epoch,
        )

    train_ds = dataset("train", repeat=True)
    held_out_ds = (
        dataset("held_out", repeat=False) if data_config.held_out > 0 else None
    )
    # One pass counts the held-out batches: Keras then knows where evaluation ends
    # (and an empty share is caught before training starts).
    validation_steps = sum(1 for _ in held_out_ds) if held_out_ds is not None else 0
    if held_out_ds is not None and validation_steps == 0:
        log("note: no documents fell in the held-out share; skipping evaluation")
        held_out_ds = None

    with strategy.scope():
        model = run_dir.build_model(config, dtype=precision)
        model.compile(
            optimizer=adamw(
                train_config.learning_rate,
                total_steps,
                train_config.warmup,
                train_config.weight_decay,
                train_config.clipnorm,
            ),
            jit_compile=jit_compile,
        )
        if found:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(found[0])
            log(
                f"resumed from {found[0]} (step {found[1]['step']}, "
                f"epoch {initial_epoch})"
            )

    throughput = Throughput(batch * data_config.seq_len)
    callbacks = [
        StopOnNonFinite(checkpoint_dir),
        StopAtStep(total_steps),
        throughput,
        # The history row before the checkpoint: a crash between the two repeats
        # the epoch, whose row HistoryCSV then replaces.
        HistoryCSV(os.path.join(out, "history.csv"), keep_before=initial_epoch),
        keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), update_freq=100),
        RunCheckpoint(checkpoint_dir),
    ]
    log(
        f"pretraining {model_config.num_layers}x{model_config.hidden_dim} BERT "
        f"({model.count_params():,} parameters), precision {precision}, "
        f"XLA {jit_compile}, "
        f"strategy {train_config.strategy}, {total_steps} steps of {batch} x "
        f"{data_config.seq_len} tokens, evaluation every {eval_every} steps -> {out}"
    )
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    history = {}
    if initial_epoch < num_epochs:
        history = model.fit(
            train_ds,
            epochs=num_epochs,
            steps_per_epoch=eval_every,
            initial_epoch=initial_epoch,
            validation_data=held_out_ds,
            validation_steps=validation_steps or None,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        ).history

    from keras_bert_lite.io import atomic_path

    with atomic_path(os.path.join(out, run_dir.WEIGHTS), suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    steps = int(model.optimizer.iterations.numpy())
    metrics = {k: float(v[-1]) for k, v in history.items()}
    result = PretrainResult(
        out, steps, metrics, throughput.tokens_per_second(), time.time() - started
    )
    write_json(
        os.path.join(out, "metrics.json"),
        {
            "steps": steps,
            "metrics": metrics,
            "precision": precision,
            "xla": jit_compile,
            "tokens_per_second": result.tokens_per_second,
            "seconds": result.seconds,
        },
    )
    log(
        f"done: {steps} steps in {result.seconds:.0f}s, "
        f"{result.tokens_per_second:,.0f} tokens/s; "
        + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(metrics.items()) if k.startswith("val_")
        )
    )
    return result
