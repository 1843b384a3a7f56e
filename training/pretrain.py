"""`pretrain()`: raw corpus -> vocabulary -> masked LM (+ NSP) -> run directory."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

from keras_bert_lite import run as run_dir
from keras_bert_lite.config import (
    CONFIG_VERSION,
    DEFAULT_CACHE_MIB,
    BertConfig,
    DataConfig,
    TrainConfig,
)
from keras_bert_lite.errors import KblError
from keras_bert_lite.io import atomic_path, remove_temporaries, write_json


@dataclasses.dataclass
class PretrainResult:
    run: str  # the run directory
    steps: int  # optimizer steps taken in total
    metrics: dict  # final held-out metrics (val_*) and last training metrics
    # Padded tokens (batch x seq_len) per second of training; None when no step was
    # timed (every evaluation interval one step: the first of each is not timed).
    tokens_per_second: float | None
    # Wall time of the run: this call and, for a resumed run, the calls before it up
    # to the checkpoint it resumed from (work lost to a crash after it not counted).
    seconds: float


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


# What a resumed run may change: its length and learning-rate schedule, and how it
# runs. The rest (model, data, batch, optimizer, seed, evaluation interval) decides
# what the checkpoint and the data position mean, so it stays as the run began.
RESUMABLE = (
    "steps",
    "epochs",
    "learning_rate",
    "warmup",
    "weight_decay",
    "clipnorm",
    "eval_batches",
    "precision",
    "strategy",
    "jit_compile",
    "steps_per_execution",
)
# Data options that may change on resume: BERT's second phase trains the first
# phase's checkpoint on longer sequences (128 -> 512). A max_predictions derived
# from seq_len follows it.
RESUMABLE_DATA = ("seq_len",)
_DATA_CHANGES = (*RESUMABLE_DATA, "max_predictions")


def _resume_changes(config: dict, config_path: str, options: dict) -> dict:
    """{field: (old, new)} for the options given on resume that differ from the
    run's config.json; an option that would change anything else is an error."""
    changes = {}
    for section, values in zip(
        ("model", "data", "train"), _split_overrides(options), strict=True
    ):
        for key, new in values.items():
            old = config[section].get(key)
            if new == old or (section == "train" and new is None):
                continue
            if key not in {"train": RESUMABLE, "data": RESUMABLE_DATA}.get(section, ()):
                raise KblError(
                    f"{config_path}: the run was started with {key}={old!r}; a "
                    f"resumed run keeps its {section} settings (got {key}={new!r}). "
                    f"Only {', '.join(RESUMABLE + RESUMABLE_DATA)} can change on "
                    "resume; drop the option, or start a new run in another --out"
                )
            changes[key] = (old, new)
    # The length is steps or epochs: giving one replaces the other.
    for key, other in (("steps", "epochs"), ("epochs", "steps")):
        if key in changes and config["train"].get(other) is not None:
            changes[other] = (config["train"][other], None)
    return changes


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
    records: str | None = None,
    until: int | None = None,
    init: str | None = None,
    tpu: str | None = None,
    log: Callable[[str], None] = print,
    verbose: int | str = "auto",
    cache_mib: int = DEFAULT_CACHE_MIB,
    **options,
) -> PretrainResult:
    """Pretrains a BERT with `model.fit` and writes a run directory.

    Under `strategy="multiworker"` every worker runs this same call; the chief
    (worker 0) writes the run directory, the others only read it. Workers read
    their share of the corpus files when there are at least as many files as
    workers; a smaller corpus is read whole by each, which then trains on its
    slice of every global batch.

    Args:
        corpus: corpus files, directories or globs; None uses the built-in default
            data (or `records`).
        out: the run directory to write (or to continue with `resume=True`).
        vocab: a vocab.txt to use; None learns one of `vocabulary_size` from the corpus.
        model: a preset name (tiny, mini, small, medium, base) or a `BertConfig`.
        vocabulary_size: size of the vocabulary to learn when `vocab` is None.
        resume: continue the run in `out` from its last checkpoint. `options` may
            then change the fields in `RESUMABLE` (length, learning-rate schedule,
            runtime switches) and `seq_len`, recorded in config.json; any other
            that differs from the run's config is an error, as are `corpus`,
            `vocab`, `model`, `vocabulary_size` and `records` (the run keeps its
            own).
        corpus_format: "auto", "bert", "jsonl" or "text".
        records: a directory of examples prepared by `kbl prepare` to train on
            instead of a corpus (its vocabulary and data config come with it).
        until: stop at this step of the schedule (a checkpoint step) and write the
            weights; the schedule stays `steps` long and `resume=True` continues
            it (phases: 90% of a run at 128 tokens, then `seq_len=512`).
        init: a pretraining run directory to start from instead of random weights:
            its vocabulary, model and trained weights (heads included) go on
            learning from `corpus` (domain-adaptive pretraining), with this call's
            schedule and data options. Not with `vocab`, `model`,
            `vocabulary_size` or `records`.
        tpu: the TPU to connect to with strategy "tpu" (None: the local one).
        log: where progress lines go.
        verbose: Keras progress display (1 bar, 2 one line per epoch, "auto").
        cache_mib: a corpus whose tokenized ids fit in this many MiB is read and
            tokenized once and kept in memory for later passes; a larger one
            streams (0: always). It changes speed and memory only, never the
            stream, so a resumed run may give another.
        **options: any field of `DataConfig` or `TrainConfig` (seq_len, nsp,
            whole_word_mask, batch_size, steps, epochs, learning_rate, precision,
            strategy, optimizer, accumulation, seed...).

    Returns:
        A `PretrainResult`.
    """
    started = time.time()
    if isinstance(cache_mib, bool) or not isinstance(cache_mib, int) or cache_mib < 0:
        raise KblError(f"cache_mib must be a whole number >= 0, got {cache_mib!r}")
    config_path = os.path.join(out, run_dir.CONFIG)
    if resume:
        if not os.path.exists(config_path):
            raise KblError(
                f"{out}: nothing to resume (no {run_dir.CONFIG}); start the run "
                "without --resume"
            )
        # These fix what the checkpoint means; the run's own come from config.json.
        given = _non_defaults(
            corpus=corpus,
            vocab=vocab,
            model=model,
            vocabulary_size=vocabulary_size,
            records=records,
            init=init,
        )
        if given:
            raise KblError(
                f"{out}: a resumed run keeps the {', '.join(given)} it began with "
                f"(in {run_dir.CONFIG}); drop {', '.join(given)}, or start a new "
                "run in another directory"
            )
        config = run_dir.read_config(out)
        init = config.get("init")
        started_with = _train_section(config, config_path)
        changes = _resume_changes(config, config_path, options)
        train_config = dataclasses.replace(
            started_with,
            **{k: new for k, (_, new) in changes.items() if k not in _DATA_CHANGES},
        )
    else:
        changes = {}
        model_over, data_over, train_over = _split_overrides(options)
        train_config = TrainConfig(**train_over)
        if until is not None and train_config.steps is not None:
            # Checked again below; here also before a vocabulary is learned (a
            # minute on a corpus of a few MB), so that a mistyped --until fails fast.
            eval_every = train_config.eval_every or _tenth(train_config.steps)
            _check_until(until, eval_every, 0, train_config.steps)

    if train_config.layer_decay != 1.0:
        raise KblError(
            f"layer_decay {train_config.layer_decay}: a fine-tuning setting "
            "(kbl finetune --layer-decay); pretraining trains every layer at one rate"
        )
    # The strategy first: the multi-worker and TPU ones configure the TensorFlow
    # runtime, which must not have run anything yet.
    import keras

    from keras_bert_lite.training.strategy import (
        Workers,
        describe,
        fit_under,
        get_strategy,
        resolve_jit_compile,
        resolve_precision,
        strategy_kind,
    )

    strategy = get_strategy(train_config.strategy, tpu=tpu)
    workers = Workers.of(strategy)
    kind = strategy_kind(strategy)

    from keras_bert_lite.data import default_data
    from keras_bert_lite.data import records as prepared
    from keras_bert_lite.data.corpus import (
        expand_paths,
        require_text,
    )
    from keras_bert_lite.data.pretraining import (
        corpus_tokenizer,
        count_instances,
        pretraining_dataset,
        require_pairs,
    )
    from keras_bert_lite.text import BertTokenizer, read_vocabulary
    from keras_bert_lite.training.callbacks import (
        NO_SEED_STATES,
        AttentionEntropy,
        HistoryCSV,
        RunCheckpoint,
        StopAtStep,
        StopOnNonFinite,
        TensorBoard,
        Throughput,
        last_history_row,
        latest_checkpoint,
        restore_seed_states,
    )
    from keras_bert_lite.training.optimizer import bert_optimizer

    if resume:
        model_config = BertConfig.from_dict(config["model"], f"{config_path}: model")
        data_config = DataConfig.from_dict(config["data"], f"{config_path}: data")
        derived = data_config.default_predictions
        slots = data_config.max_predictions
        if "seq_len" in changes and slots == derived(data_config.seq_len):
            # max_predictions was derived from seq_len: it follows it.
            changes["max_predictions"] = (slots, derived(changes["seq_len"][1]))
        data_changes = {k: v for k, (_, v) in changes.items() if k in _DATA_CHANGES}
        data_config = dataclasses.replace(data_config, **data_changes)
        records = config.get("records")
        if records is not None and data_changes:
            raise KblError(
                f"{records}: the run trains on prepared records, which fix seq_len; "
                "prepare records of the new length and start a run on them"
            )
        files = config.get("corpus")
        if records is None and (
            not isinstance(files, list) or not all(isinstance(f, str) for f in files)
        ):
            raise KblError(f"{config_path}: 'corpus' must be a list of file paths")
        corpus_format = config.get("corpus_format", corpus_format)
        tokenizer = run_dir.load_tokenizer(out)
    else:
        # Another worker's chief may already have written the config of this run.
        if os.path.exists(config_path) and workers.chief:
            raise KblError(
                f"{out}: already holds a run; continue it with --resume or "
                "choose another --out"
            )
        if init is not None:
            fixed = _non_defaults(
                vocab=vocab,
                model=model,
                vocabulary_size=vocabulary_size,
                records=records,
            )
            if fixed:
                raise KblError(
                    f"{init}: a run started from it keeps its vocabulary and model; "
                    f"drop {', '.join(fixed)}"
                )
            init = os.path.abspath(init)
            model, init_tokenizer = _init_source(init, model_over, data_over)
            data_over["lowercase"] = init_tokenizer.lowercase
        if records is not None:
            manifest = prepared.read_manifest(records)
            records = os.path.abspath(records)
            if data_over:
                raise KblError(
                    f"{records}: prepared records fix the data options "
                    f"({', '.join(sorted(data_over))} given); prepare them anew"
                )
            data_config = DataConfig.from_dict(manifest["data"], records)
            records_vocab = os.path.join(records, run_dir.VOCAB)
            tokenizer = BertTokenizer(
                read_vocabulary(records_vocab), data_config.lowercase
            )
            if vocab is not None and read_vocabulary(vocab) != tokenizer.vocabulary:
                # The records hold ids: another vocabulary would read them as other
                # tokens (it was ignored before, silently).
                raise KblError(
                    f"{vocab}: not the vocabulary the records were prepared with "
                    f"({records_vocab}); drop --vocab, or prepare records with it"
                )
            if _non_defaults(vocabulary_size=vocabulary_size) and (
                vocabulary_size != tokenizer.vocabulary_size
            ):
                # It was ignored before, silently: the records' vocabulary is used.
                raise KblError(
                    f"vocabulary_size {vocabulary_size}: the records were prepared "
                    f"with a vocabulary of {tokenizer.vocabulary_size} tokens "
                    f"({records_vocab}), which the run uses; drop --vocab-size, or "
                    "prepare records with a vocabulary of that size"
                )
            files = None
        else:
            data_config = DataConfig(**data_over)
            if corpus is None:
                corpus = [default_data.pretraining_corpus(log=log)]
            files = expand_paths(corpus)
            require_text(files, corpus_format)
            tokenizer = (
                init_tokenizer
                if init is not None
                else corpus_tokenizer(
                    files,
                    corpus_format,
                    vocab,
                    vocabulary_size,
                    data_config.lowercase,
                    log,
                )
            )
        model_config = _model_config(model, model_over, tokenizer, vocab)
        _check_seq_len(data_config, model_config)
        if data_config.nsp and files is not None:
            require_pairs(files, tokenizer, data_config, corpus_format)
        if train_config.steps is None and train_config.epochs is None:
            train_config.epochs = 1
        config = {
            "kbl_run": CONFIG_VERSION,
            "task": "pretraining",
            "model": model_config.to_dict(),
            "data": data_config.to_dict(),
            "train": train_config.to_dict(),
            "corpus": [os.path.abspath(f) for f in files] if files else None,
            "corpus_format": corpus_format,
        }
        if init is not None:
            config["init"] = init
        if records is not None:
            config["records"] = records

    _check_seq_len(data_config, model_config)
    # Deterministic weight initialisation and dropout for a given seed.
    keras.utils.set_random_seed(train_config.seed)
    precision = resolve_precision(train_config.precision)

    batch = train_config.batch_size
    accumulation = train_config.accumulation
    micro_batch = batch // accumulation
    replicas = strategy.num_replicas_in_sync
    if micro_batch % replicas:
        raise KblError(
            f"batch size {batch} / accumulation {accumulation} = {micro_batch} "
            f"examples per micro-batch cannot be split evenly over {replicas} "
            "replicas; choose a batch size that can"
        )

    def steps_of(train: TrainConfig) -> int:
        if train.steps is not None:
            return train.steps
        if records is not None:
            per_pass = prepared.read_manifest(records)["examples"]
        else:
            per_pass = count_instances(
                files,
                tokenizer,
                data_config,
                train.seed,
                split="train",
                corpus_format=corpus_format,
            )
        if per_pass < batch:
            raise KblError(
                f"the corpus gives only {per_pass} training examples, fewer than "
                f"one batch of {batch}; lower --batch-size or add text"
            )
        return train.epochs * (per_pass // batch)

    total_steps = steps_of(train_config)
    if train_config.eval_every is None and ("steps" in changes or "epochs" in changes):
        # The default interval (a tenth of the run) follows the length; a resumed
        # run keeps the one its checkpoints were written at.
        pinned = _tenth(steps_of(started_with))
        train_config = dataclasses.replace(train_config, eval_every=pinned)
        changes["eval_every"] = (None, pinned)
    eval_every = train_config.eval_every or _tenth(total_steps)
    steps_per_execution = train_config.steps_per_execution or (
        # TPUs: many steps per host call, and a whole number of calls per epoch.
        max(d for d in range(1, min(eval_every, 100) + 1) if eval_every % d == 0)
        if kind == "tpu"
        else 1
    )
    if eval_every % steps_per_execution:
        raise KblError(
            f"eval_every {eval_every} is not a multiple of steps_per_execution "
            f"{steps_per_execution}"
        )
    num_epochs = math.ceil(total_steps / eval_every)
    jit_compile = resolve_jit_compile(
        train_config.jit_compile, precision, strategy, total_steps
    )

    checkpoint_dir = os.path.join(out, "checkpoints")
    initial_epoch = 0
    found = None
    if resume:  # what a killed run left half-written goes; the rest is whole
        if workers.chief:
            for directory in (out, checkpoint_dir):
                remove_temporaries(directory)
        found = latest_checkpoint(checkpoint_dir)
    seconds_before = 0.0
    if found:
        initial_epoch = found[1]["epoch"]
        seconds_before = found[1].get("seconds", 0.0)
    reached = found[1]["step"] if found else 0
    stop = total_steps
    if until is not None:
        _check_until(until, eval_every, reached, total_steps)
        stop, num_epochs = until, until // eval_every
    if not resume and workers.chief:
        # Written once every option has been checked: a refused command leaves no
        # run directory behind that would then ask for --resume.
        os.makedirs(out, exist_ok=True)
        tokenizer.save(out)
        write_json(config_path, config)
    if changes:
        if total_steps < reached:
            raise KblError(
                f"{out}: the run is at step {reached} (its last checkpoint); a "
                f"schedule of {total_steps} steps ends before it. Give --steps "
                f"{reached} or more ({reached} ends the run there and writes its "
                "weights)"
            )
        if workers.chief:
            config["train"] = train_config.to_dict()
            config["data"] = data_config.to_dict()
            record = {"step": reached, "train": {}, "data": {}}
            for key, change in changes.items():
                record["data" if key in _DATA_CHANGES else "train"][key] = list(change)
            config.setdefault("resumes", []).append(
                {k: v for k, v in record.items() if v != {}}
            )
            write_json(config_path, config)
        said = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
        log(f"resuming with {said} (recorded in {config_path})")

    # Where each worker's examples come from: its share of the files when there are
    # enough files (each reads only those), else the whole corpus, of which the
    # strategy hands each worker its slice of every global batch.
    n_files = len(prepared.record_files(records) if records else files)
    shard_by_file = workers.count > 1 and n_files >= workers.count
    # A resumed run replays the training stream up to its checkpoint (the pipeline
    # makes hundreds of times the tokens a training step takes, so this costs
    # seconds): it sees the pairs, masks and order a run never stopped would, and
    # with the restored dropout states ends bit-identical to it. Where the stream
    # cannot be replayed (another number of workers, whose shares of the corpus
    # differ; data settings changed on this or an earlier resume), it draws new
    # pairs and masks from the checkpoint on instead, seeded by its epoch.
    data_changed = any(k in _DATA_CHANGES for k in changes) or any(
        "data" in r for r in config.get("resumes", [])
    )
    replay = (
        found is not None
        and found[1].get("workers", 1) == workers.count
        and not data_changed
    )
    fresh_from = 0 if replay else initial_epoch
    skip_batches = initial_epoch * eval_every * accumulation if replay else 0

    def dataset(split: str, repeat: bool, size: int, shard=None):
        # Training batches have static shapes (XLA, TPUs). The held-out pass keeps
        # its last partial batch, but not on several workers: that batch may not
        # split over all of them, and a worker left without one would stall the rest.
        drop_remainder = repeat or workers.count > 1
        if records is not None:
            names = prepared.record_files(records, split)
            return prepared.records_dataset(
                names,
                data_config,
                size,
                seed=train_config.seed + fresh_from,
                repeat=repeat,
                drop_remainder=drop_remainder,
                shard=shard,
            )
        return pretraining_dataset(
            files,
            tokenizer,
            batch_size=size,
            seed=train_config.seed,
            config=data_config,
            split=split,
            repeat=repeat,
            drop_remainder=drop_remainder,
            corpus_format=corpus_format,
            resume_pass=fresh_from if repeat else 0,
            shard=shard,
            cache_bytes=cache_mib << 20,
        )

    if shard_by_file:

        def worker_dataset(context):
            return dataset(
                "train",
                True,
                context.get_per_replica_batch_size(micro_batch),
                (context.input_pipeline_id, context.num_input_pipelines),
            ).skip(skip_batches)

        train_ds = strategy.distribute_datasets_from_function(worker_dataset)
    else:
        train = dataset("train", True, micro_batch)
        train_ds = _data_sharded(train.skip(skip_batches), workers)
    held_out_ds = None
    validation_steps = 0
    if data_config.held_out > 0 and (
        records is None or prepared.record_files(records, "held_out")
    ):
        held_out = dataset("held_out", False, micro_batch)
        cap = train_config.eval_batches
        if cap is not None:
            held_out = held_out.take(cap)
        held_out_ds = _data_sharded(held_out, workers)
        # Counting the held-out batches (as far as the cap) tells Keras where
        # evaluation ends, and an empty share is caught before training starts.
        # Attention is inspected on the first 8 held-out sequences.
        for inputs, *_ in held_out:
            if not validation_steps:
                attention_batch = {
                    k: inputs[k][:8]
                    for k in ("token_ids", "segment_ids", "padding_mask")
                }
            validation_steps += 1
        if validation_steps < workers.count:
            log("note: no documents fell in the held-out share; skipping evaluation")
            held_out_ds = None
        else:
            capped = " (the --eval-batches cap)" if validation_steps == cap else ""
            log(f"held-out: {validation_steps} batches per evaluation{capped}")

    with strategy.scope():
        model = run_dir.build_model(config, dtype=precision)
        model.compile(
            optimizer=bert_optimizer(
                train_config.learning_rate,
                total_steps,
                train_config.warmup,
                train_config.weight_decay,
                train_config.clipnorm,
                optimizer=train_config.optimizer,
                accumulation=accumulation,
            ),
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
        fit_under(model, strategy, train_ds.element_spec)
        if found:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(found[0])
            if not restore_seed_states(model, found[1].get("seed_states")):
                log(NO_SEED_STATES)
            log(
                f"resumed from {found[0]} (step {found[1]['step']}, "
                f"epoch {initial_epoch}); "
                + (
                    f"the data stream is replayed to its micro-batch {skip_batches}"
                    if replay
                    else "new pairs and masks are drawn from here"
                )
            )
        elif init is not None:
            _copy_weights(run_dir.load(init), model)
            log(f"starting from the weights of {init}")

    throughput = Throughput(micro_batch * data_config.seq_len)
    callbacks = [StopOnNonFinite(checkpoint_dir), StopAtStep(stop), throughput]
    if workers.chief:  # the others compute the same and write nothing
        if held_out_ds is not None:  # ahead of the callbacks that write the logs
            callbacks.append(AttentionEntropy(attention_batch))
        callbacks += [
            # The history row before the checkpoint: a crash between the two repeats
            # the epoch, whose row HistoryCSV then replaces.
            HistoryCSV(os.path.join(out, "history.csv"), keep_before=initial_epoch),
            TensorBoard(os.path.join(out, "tensorboard"), update_freq=100),
            RunCheckpoint(
                checkpoint_dir,
                state=lambda: {"workers": workers.count},
                started=started,
                seconds_before=seconds_before,
            ),
        ]
    log(
        f"pretraining {model_config.num_layers}x{model_config.hidden_dim} BERT "
        f"({model.count_params():,} parameters), precision {precision}, "
        f"XLA {jit_compile}, {describe(strategy, workers)}, "
        f"{train_config.optimizer}, {total_steps} steps of {batch} x "
        f"{data_config.seq_len} tokens"
        + (f" in {accumulation} micro-batches" if accumulation > 1 else "")
        + f", evaluation every {eval_every} steps"
        + (f", stopping at step {stop} (until)" if stop < total_steps else "")
        + f" -> {out}"
    )
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    history = {}
    if initial_epoch < num_epochs:
        history = model.fit(
            train_ds,
            epochs=num_epochs,
            steps_per_epoch=eval_every * accumulation,
            initial_epoch=initial_epoch,
            validation_data=held_out_ds,
            validation_steps=validation_steps or None,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        ).history

    steps = int(model.optimizer.iterations.numpy())
    metrics = {k: float(v[-1]) for k, v in history.items()}
    if not history:  # ended at the checkpoint: its epoch's metrics stand
        metrics = last_history_row(os.path.join(out, "history.csv"))
    # Tokens/s of the whole run: a step is `accumulation` micro-batches.
    result = PretrainResult(
        out,
        steps,
        metrics,
        throughput.tokens_per_second(),
        seconds_before + time.time() - started,
    )
    if workers.chief:
        with atomic_path(
            os.path.join(out, run_dir.WEIGHTS), suffix=".weights.h5"
        ) as tmp:
            model.save_weights(tmp)
        write_json(
            os.path.join(out, "metrics.json"),
            {
                "steps": steps,
                "metrics": metrics,
                "precision": precision,
                "xla": jit_compile,
                "strategy": kind,
                "replicas": replicas,
                "workers": workers.count,
                "tokens_per_second": result.tokens_per_second,
                "seconds": result.seconds,
            },
        )
    speed = result.tokens_per_second
    trained = (
        f"{result.seconds:.0f}s, "
        + (f"{speed:,.0f} tokens/s" if speed else "tokens/s not measured")
        if history
        else "ended at the checkpoint, weights written"
    )
    log(
        f"done: {steps} steps ({trained}); "
        + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(metrics.items()) if k.startswith("val_")
        )
    )
    return result


def _tenth(steps: int) -> int:
    """The default evaluation (and checkpoint) interval: a tenth of the run."""
    return max(1, math.ceil(steps / 10))


def _check_until(until: int, eval_every: int, reached: int, total_steps: int) -> None:
    if until % eval_every or not reached <= until <= total_steps:
        raise KblError(
            f"until {until}: give a checkpoint step (a multiple of the evaluation "
            f"interval, {eval_every}) from the run's step {reached} to the end of "
            f"its schedule, {total_steps}"
        )


def _non_defaults(**values) -> list[str]:
    """Which of pretrain()'s run-fixing arguments are given (not their default)."""
    defaults = {"model": "mini", "vocabulary_size": 8192}
    return [name for name, value in values.items() if value != defaults.get(name)]


def _init_source(init: str, model_over: dict, data_over: dict) -> tuple:
    """(model config, tokenizer) of the pretraining run `init`, checked: it has
    weights, and the options given keep its architecture and casing."""
    source = run_dir.read_config(init)
    where = os.path.join(init, run_dir.CONFIG)
    if source.get("task") != "pretraining":
        raise KblError(
            f"{where}: a fine-tuned run (task {source.get('task')}); start from a "
            "pretraining run"
        )
    if not os.path.exists(os.path.join(init, run_dir.WEIGHTS)):
        raise KblError(
            f"{init}: no {run_dir.WEIGHTS} yet; finish the run (or end a phase "
            "with `kbl pretrain --resume --until N`) before starting from it"
        )
    reshaped = sorted(set(model_over) - {"dropout"})
    if reshaped:
        raise KblError(
            f"{init}: its weights fix the architecture; drop {', '.join(reshaped)} "
            "(only dropout may change)"
        )
    model = BertConfig.from_dict(source["model"], f"{where}: model")
    tokenizer = run_dir.load_tokenizer(init)
    if data_over.get("lowercase", tokenizer.lowercase) != tokenizer.lowercase:
        raise KblError(
            f"{init}: its vocabulary is {'un' if tokenizer.lowercase else ''}cased; "
            "drop the casing option"
        )
    return model, tokenizer


def _copy_weights(source, model) -> None:
    """The backbone and heads of one pretrainer into another (a next-sentence
    head only where both have one)."""
    pairs = [(source.backbone, model.backbone), (source.mlm_head, model.mlm_head)]
    if source.nsp_head is not None and model.nsp_head is not None:
        pairs.append((source.nsp_head, model.nsp_head))
    for origin, target in pairs:
        target.set_weights(origin.get_weights())


def _train_section(config: dict, config_path: str) -> TrainConfig:
    if "train" not in config:
        raise KblError(f"{config_path}: the 'train' section is missing")
    return TrainConfig.from_dict(config["train"], f"{config_path}: train")


def _model_config(model, overrides: dict, tokenizer, vocab) -> BertConfig:
    """The architecture: a preset, a config.json or a `BertConfig`, checked
    against the vocabulary."""
    if isinstance(model, BertConfig):
        config = model
    elif os.path.isfile(str(model)):
        from keras_bert_lite.io import read_json

        config = BertConfig.from_dict(read_json(model), where=str(model))
    else:
        config = BertConfig.from_preset(
            str(model), vocabulary_size=tokenizer.vocabulary_size
        )
    config = dataclasses.replace(config, **overrides)  # whatever the source
    if config.vocabulary_size != tokenizer.vocabulary_size:
        raise KblError(
            f"{model if isinstance(model, str) else 'model'}: vocabulary_size "
            f"{config.vocabulary_size} does not match the vocabulary's "
            f"{tokenizer.vocabulary_size} tokens ({vocab or 'learned'}); use a "
            "vocabulary of that size or change the model's vocabulary_size"
        )
    return config


def _data_sharded(dataset, workers):
    """Every worker builds the same global stream; the strategy gives each its
    slice of every batch (tf.data's DATA auto-sharding, said explicitly: the
    corpus is read by a Python generator, which FILE sharding cannot split)."""
    if workers.count == 1:
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)
