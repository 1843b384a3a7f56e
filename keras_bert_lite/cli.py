"""`kbl`: thin command-line shells over the library functions.

Every command prints progress, writes machine-readable JSON beside its human output,
and on bad input exits with status 2 and a one-line reason (`--debug` for a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from keras_bert_lite.config import DEFAULT_CACHE_MIB, POOLING, PRECISIONS, STRATEGIES
from keras_bert_lite.errors import KblError


def _quiet_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up chatter kept off the terminal.

    On machines without a GPU it probes CUDA and logs errors that no environment
    variable silences; they bury the progress lines users need. Later C++ log lines
    are off too (level 3): at ERROR level TensorFlow logs conditions it recovers
    from (oneDNN falling back to Eigen for int32 ops on some CPUs), and a real
    failure reaches the user as the Python exception's one line. `--debug` skips
    this and shows everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from keras_bert_lite.native_log import EVERYTHING, native_stderr

    with native_stderr(EVERYTHING):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the ops

        tf.config.list_physical_devices()


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got '{text}'"
        ) from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _add_training_options(p: argparse.ArgumentParser, pretraining: bool) -> None:
    """Options that pretraining and fine-tuning share (pretraining adds its own)."""
    if pretraining:
        p.add_argument(
            "--seq-len",
            type=_positive_int,
            help="tokens per example (default 128)",
        )
        steps = p.add_mutually_exclusive_group()
        steps.add_argument("--steps", type=_positive_int, help="optimizer steps")
        steps.add_argument(
            "--epochs", type=_positive_int, help="passes over the corpus"
        )
        p.add_argument(
            "--eval-every",
            type=_positive_int,
            help="steps between held-out evaluations and checkpoints "
            "(default: a tenth of the run)",
        )
        p.add_argument(
            "--eval-batches",
            type=int,
            default=100,
            help="held-out batches per evaluation; 0 evaluates the whole held-out "
            "share (default 100)",
        )
        p.add_argument(
            "--learning-rate",
            type=float,
            default=3e-4,
            help="peak learning rate after warm-up (default 3e-4; at 1e-3 BERT-mini's "
            "attention collapsed and pretraining stalled)",
        )
        p.add_argument(
            "--warmup",
            type=float,
            default=0.1,
            help="share of the steps spent warming up from 0 (default 0.1)",
        )
        p.add_argument(
            "--optimizer",
            default="adamw",
            choices=["adamw", "lamb"],
            help="lamb: layer-wise trust ratio, for large batches (default adamw)",
        )
        p.add_argument(
            "--steps-per-execution",
            type=_positive_int,
            help="steps per device call (default 1; on a TPU up to 100)",
        )
    p.add_argument(
        "--tpu", help="with --strategy tpu|auto: the TPU name or grpc:// address"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="global batch size per optimizer step (default 32)",
    )
    p.add_argument(
        "--accumulation",
        type=_positive_int,
        default=1,
        help="micro-batches per step (gradient accumulation): each holds "
        "batch-size / accumulation examples (default 1)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
    )
    p.add_argument(
        "--strategy",
        default="auto",
        choices=list(STRATEGIES),
        help="auto: TPU if attached, mirrored over several GPUs, else default; "
        "multiworker reads the cluster from TF_CONFIG",
    )
    p.add_argument(
        "--xla",
        default="auto",
        choices=["auto", "on", "off"],
        help="XLA-compile the train step (auto: where it was measured faster)",
    )
    p.add_argument("--seed", type=int, default=0)


def _data_options(args) -> dict:
    """The data options given on the command line (defaults left to DataConfig)."""
    options = {}
    if getattr(args, "seq_len", None) is not None:
        options["seq_len"] = args.seq_len
    if args.no_nsp:
        options["nsp"] = False
    if args.whole_word_mask:
        options["whole_word_mask"] = True
    if args.cased:
        options["lowercase"] = False
    if args.held_out is not None:
        options["held_out"] = args.held_out
    return options


def _add_vocabulary_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", help="vocab.txt to use (default: learn one)")
    p.add_argument(
        "--vocab-size",
        type=_positive_int,
        default=8192,
        help="size of the vocabulary to learn (default 8192)",
    )


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-nsp",
        action="store_true",
        help="no next-sentence task: pack contiguous text as one segment",
    )
    p.add_argument("--whole-word-mask", action="store_true")
    p.add_argument("--cased", action="store_true")
    p.add_argument(
        "--held-out",
        type=float,
        help="share of documents held out for evaluation (default 0.05)",
    )
    p.add_argument(
        "--format", default="auto", choices=["auto", "bert", "jsonl", "text"]
    )


def _cmd_vocab(args) -> dict:
    from keras_bert_lite.data.corpus import CorpusStats, read_documents, require_text
    from keras_bert_lite.io import require_file_path, write_text
    from keras_bert_lite.text import learn_vocabulary

    require_file_path(args.out, "--out")
    require_text(args.corpus, args.format)
    stats = CorpusStats()
    print(
        f"learning a {args.size}-token vocabulary from {', '.join(args.corpus)} ...",
        flush=True,
    )
    tokens = learn_vocabulary(
        (s for doc in read_documents(args.corpus, args.format, stats) for s in doc),
        args.size,
        lowercase=not args.cased,
    )
    write_text(args.out, "\n".join(tokens) + "\n")
    result = {
        "vocab": args.out,
        "size": len(tokens),
        "cased": args.cased,
        "documents": stats.documents,
        "sentences": stats.sentences,
        "empty_documents": stats.empty_documents,
        "replaced_bytes_lines": stats.replaced_bytes_lines,
    }
    print(
        f"wrote {len(tokens)} tokens to {args.out} ({stats.documents} documents, "
        f"{stats.sentences} sentences)"
    )
    if len(tokens) < 0.95 * args.size:
        print(
            f"  fewer than the {args.size} asked for: every character is kept, and "
            "a longer piece needs about 10 occurrences; the corpus has no more"
        )
    elif len(tokens) > args.size:
        print(
            f"  more than the {args.size} asked for: every character of the corpus "
            "(up to 1,000 of them) is kept, with its ##-continuation where a "
            "character continues words, so that no word becomes [UNK]"
        )
    return result


def _eval_batches(value: int) -> int | None:
    if value < 0:
        raise KblError(f"--eval-batches must be 0 (all) or more, got {value}")
    return value or None


def _pretrain_options(args) -> dict:
    return dict(
        batch_size=args.batch_size,
        steps=args.steps,
        epochs=args.epochs,
        eval_every=args.eval_every,
        eval_batches=_eval_batches(args.eval_batches),
        learning_rate=args.learning_rate,
        warmup=args.warmup,
        precision=args.precision,
        strategy=args.strategy,
        optimizer=args.optimizer,
        accumulation=args.accumulation,
        steps_per_execution=args.steps_per_execution,
        seed=args.seed,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.xla],
        **_data_options(args),
        **({} if args.dropout is None else {"dropout": args.dropout}),
    )


# The command-line option (argparse dest) behind each pretrain() option of another name.
_FLAG = {"jit_compile": "xla", "nsp": "no_nsp", "lowercase": "cased"}


def _given_options(argv: list[str]) -> set[str]:
    """The options (argparse dests) of its command that `argv` gives, defaults left
    out."""
    parser = build_parser()
    command = parser.parse_args(argv).command
    sub, rest = parser.commands[command], argv[argv.index(command) + 1 :]
    # Parsed again with every default a marker (set_defaults overrides the defaults
    # that add_argument set), the options not given are the marker.
    not_given = object()
    sub.set_defaults(**dict.fromkeys(vars(sub.parse_args(rest)), not_given))
    return {d for d, v in vars(sub.parse_args(rest)).items() if v is not not_given}


def _cmd_pretrain(args) -> dict:
    from keras_bert_lite.training import pretrain

    options = _pretrain_options(args)
    if args.resume or args.init:
        # Only the options the command line gives (a default value given on purpose
        # counts: `--learning-rate 3e-4` on a run started at 1e-3 changes it);
        # pretrain() says which of those a resumed run can take.
        given = _given_options(args.argv)
        keeps = ["vocab", "vocab_size", "model", "records"]
        if args.resume:
            keeps += ["corpus", "format", "init"]
        fixed = [name for name in keeps if name in given]
        if fixed:
            flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
            drop = "them" if len(fixed) > 1 else "it"
            if args.resume:
                raise KblError(
                    f"{flags} with --resume: a resumed run keeps its corpus, "
                    "vocabulary and model (see "
                    f"{os.path.join(args.out, 'config.json')}); drop {drop}, or "
                    "start a new run in another --out"
                )
            raise KblError(
                f"{flags} with --init: a run started from {args.init} keeps its "
                f"vocabulary and model; drop {drop}"
            )
    if args.resume:
        options = {k: v for k, v in options.items() if _FLAG.get(k, k) in given}
    if args.records and args.corpus:
        raise KblError("give --corpus or --records, not both")
    result = pretrain(
        args.corpus,
        args.out,
        vocab=args.vocab,
        model=args.model,
        vocabulary_size=args.vocab_size,
        resume=args.resume,
        corpus_format=args.format,
        records=args.records,
        until=args.until,
        init=args.init,
        tpu=args.tpu,
        cache_mib=args.cache_mib,
        **options,
    )
    return {
        "run": result.run,
        "steps": result.steps,
        "metrics": result.metrics,
        "tokens_per_second": result.tokens_per_second,
        "seconds": result.seconds,
    }


def _cmd_prepare(args) -> dict:
    from keras_bert_lite.config import DataConfig
    from keras_bert_lite.data.corpus import expand_paths, require_text
    from keras_bert_lite.data.pretraining import corpus_tokenizer, require_pairs
    from keras_bert_lite.data.records import require_new, write_records

    config = DataConfig(**_data_options(args))
    require_new(args.out)
    files = expand_paths(args.corpus)
    require_text(files, args.format)
    tokenizer = corpus_tokenizer(
        files, args.format, args.vocab, args.vocab_size, config.lowercase
    )
    if config.nsp:
        require_pairs(files, tokenizer, config, args.format)
    manifest = write_records(
        files,
        tokenizer,
        args.out,
        config,
        dupe_factor=args.dupe_factor,
        shards=args.shards,
        seed=args.seed,
        corpus_format=args.format,
        log=lambda line: print(line, flush=True),
    )
    print(
        f"wrote {manifest['examples']:,} examples ({manifest['tokens']:,} tokens) in "
        f"{args.shards} shard(s) and {manifest['held_out_examples']:,} held-out "
        f"examples to {args.out} in {manifest['seconds']:.0f}s; train on them with "
        f"`kbl pretrain --records {args.out} --out RUN`"
    )
    return manifest


def _cmd_quickstart(args) -> dict:
    from keras_bert_lite.data import default_data
    from keras_bert_lite.export import export_all, verify
    from keras_bert_lite.export.manifest import read_manifest
    from keras_bert_lite.export.predict import predict as predict_exported
    from keras_bert_lite.training import pretrain
    from keras_bert_lite.training.finetune import finetune, predict

    started = time.time()
    out = args.out
    pretrained, classifier = (
        os.path.join(out, "pretrain"),
        os.path.join(out, "sentiment"),
    )
    print(
        f"kbl quickstart: the whole path on the built-in default data -> {out}",
        flush=True,
    )
    docs = default_data.pretraining_corpus()
    train, dev = default_data.sentiment_dataset()

    print(
        "\nstep 1/4: learn a vocabulary and pretrain a tiny BERT (masked LM + NSP) on "
        "Python's documentation and the review snippets' text",
        flush=True,
    )
    if os.path.exists(os.path.join(pretrained, "model.weights.h5")):
        print(f"{pretrained} is already pretrained; keeping it")
    else:
        # An interrupted quickstart continues; the run keeps its corpus and model.
        resume = os.path.exists(os.path.join(pretrained, "config.json"))
        new_run = dict(
            model="tiny",
            vocabulary_size=6000,
            seq_len=64,
            batch_size=32,
            learning_rate=1e-3,
        )
        pretrain(
            None if resume else [docs, train],
            pretrained,
            steps=args.steps,
            resume=resume,
            **({} if resume else new_run),
        )

    print("\nstep 2/4: fine-tune a sentiment classifier (pos/neg) from it", flush=True)
    if os.path.exists(classifier):
        shutil.rmtree(classifier)
    result = finetune(
        "classify",
        train,
        dev,
        classifier,
        init=pretrained,
        seq_len=64,
        batch_size=32,
        epochs=2,
        learning_rate=5e-4,
    )
    metrics = result.metrics

    print(
        "\nstep 3/4: export it as a TF Serving SavedModel, TFLite files (float32, "
        "float16, dynamic-range and full int8, ids-only) and ONNX, and verify each "
        "against the Keras model",
        flush=True,
    )
    exported = os.path.join(out, "export")
    export_all(classifier, exported)
    report = verify(exported, limit=args.verify_limit)

    print("\nstep 4/4: predictions from the run and from every exported format")
    samples = [
        "A warm, funny and beautifully acted film.",
        "Two hours of my life I will never get back.",
        "The plot is thin, but the performances carry it.",
    ]
    predictions = {"keras": predict(classifier, samples)}
    for entry in read_manifest(exported)["formats"]:
        path = os.path.join(exported, entry["path"])
        predictions[entry["name"]] = predict_exported(path, samples)
    for i, text in enumerate(samples):
        print(f"  {text}")
        for name, rows in predictions.items():
            p = rows[i]
            print(f"    {name:<16} {p['label']} {p['probabilities'][p['label']]:.3f}")
    summary = {
        "pretrained": pretrained,
        "classifier": classifier,
        "export": exported,
        "dev_accuracy": metrics["accuracy"],
        "dev_macro_f1": metrics["macro_f1"],
        "verify": report,
        "predictions": predictions,
        "seconds": time.time() - started,
    }
    print(
        f"\nquickstart finished in {summary['seconds']:.0f}s: dev accuracy "
        f"{metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}\n"
        f"  pretrained run: {pretrained}\n  classifier run: {classifier}\n"
        f"  exports: {exported} (verify.json: parity, metric, size, latency)\n"
        "Next: `kbl pretrain --corpus YOUR_FILES --out RUN`, then "
        "`kbl finetune --task classify --train T --dev D --init RUN --out RUN2`, "
        "`kbl export --model RUN2 --format all --out DIR`, `kbl verify --export DIR`."
    )
    return summary


def _cmd_finetune(args) -> dict:
    from keras_bert_lite.training.finetune import finetune

    result = finetune(
        args.task,
        args.train,
        args.dev,
        args.out,
        init=args.init,
        model=args.model,
        vocab=args.vocab,
        lowercase=not args.cased,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        layer_decay=args.layer_decay,
        patience=args.patience,
        doc_stride=args.doc_stride,
        max_query_len=args.max_query_len,
        max_train=args.max_train,
        crf=args.crf,
        pooling=args.pooling,
        backbone_dropout=args.backbone_dropout,
        seed=args.seed,
        resume=args.resume,
        precision=args.precision,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.xla],
        strategy=args.strategy,
        tpu=args.tpu,
        accumulation=args.accumulation,
    )
    return {
        "run": result.run,
        "dev": result.metrics,
        "epochs": result.epochs,
        "seconds": result.seconds,
    }


def _cmd_evaluate(args) -> dict:
    from keras_bert_lite.training.finetune import evaluate

    metrics = evaluate(args.model, args.data)
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return metrics


def _cmd_predict(args) -> dict:
    from keras_bert_lite.training.finetune import predict

    texts, contexts = list(args.text), None
    pairs = list(args.text_b) if args.text_b else None
    if args.question or args.context:
        if len(args.question or []) != len(args.context or []):
            raise KblError("give one --context for every --question")
        texts, contexts = list(args.question), list(args.context)
    if pairs is not None and len(pairs) != len(texts):
        raise KblError(
            f"give one --text-b for every text ({len(texts)} texts, "
            f"{len(pairs)} --text-b)"
        )
    if args.input:
        from keras_bert_lite.data import tasks

        kind = args.input.removesuffix(".gz")
        if kind.endswith(".json") and tasks.is_squad(args.input):  # QA questions
            examples = tasks.read_squad(args.input, require_answers=False)
            texts = [e.question for e in examples]
            contexts = [e.context for e in examples]
        elif kind.endswith(".conll") or (
            # A tagger is trained on CoNLL written .tsv too: read it as it was.
            kind.endswith(".tsv") and _model_task(args.model) == "tag"
        ):
            # Sentences of a CoNLL file, tags unused, as raw text: words joined by
            # spaces (none between two CJK characters, as Chinese is written).
            sentences = tasks.read_conll(args.input, require_tags=False)
            texts += [tasks.join_words(words) for words, _ in sentences]
        elif kind.endswith((".jsonl", ".json", ".csv", ".tsv")):
            # Task records, as fine-tuning reads them; labels are not needed.
            records = tasks.read_classification(args.input, require_labels=False)
            if "text_a" in records[0]:
                texts += [r["text_a"] for r in records]
                pairs = (pairs or []) + [r["text_b"] for r in records]
            else:
                texts += [r["text"] for r in records]
        else:  # one text per line (`-`: standard input)
            texts += tasks.read_texts(args.input)
    if not texts:
        raise KblError(
            "nothing to predict: give TEXT arguments or --input FILE (- for "
            "standard input)"
        )
    exported = _is_export(args.model)
    if exported:
        from keras_bert_lite.export.predict import predict as predict_exported

        results = predict_exported(
            args.model, texts, pairs=pairs, contexts=contexts, threshold=args.threshold
        )
    else:
        results = predict(
            args.model, texts, contexts=contexts, pairs=pairs, threshold=args.threshold
        )
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    cut = sum("truncated_at" in r or "truncated_at_b" in r for r in results)
    if cut and not exported:  # a run's classifier: of runs, only classifiers cut
        print(
            f"kbl predict: {cut} text(s) longer than the classifier reads (seq_len "
            "word pieces, [CLS] and [SEP] included) were read up to their "
            "truncated_at character (truncated_at_b: the second text's); fine-tune "
            "with a longer --seq-len to read more",
            file=sys.stderr,
        )
    elif cut:
        print(
            f"kbl predict: {cut} text(s) (QA: contexts) longer than the export "
            "reads (its seq_len word pieces) were read up to their truncated_at "
            "character; `kbl predict --model RUN` windows long texts",
            file=sys.stderr,
        )
    return {"predictions": results}


def _model_task(path: str) -> str:
    """The task ("classify", "tag", "qa") of a fine-tuned run or an export of one."""
    if _is_export(path):
        from keras_bert_lite.export.predict import _locate

        return _locate(path)[2]["task"]
    from keras_bert_lite.training.finetune import _task_of

    return _task_of(path)[1]


def _is_export(path: str) -> bool:
    """Whether `kbl predict --model` names an exported artefact rather than a run."""
    return path.endswith((".tflite", ".onnx")) or any(
        os.path.exists(os.path.join(path, name))
        for name in ("export.json", "saved_model.pb")
    )


def _cmd_import(args) -> dict:
    from keras_bert_lite.checkpoints import import_checkpoint

    lowercase = True if args.uncased else False if args.cased else None
    print(f"importing {args.source} -> {args.out}", flush=True)
    return import_checkpoint(args.source, args.out, lowercase=lowercase)


# === export / verify ===


def _cmd_export(args) -> dict:
    if args.format == "hf":  # a Hugging Face BERT folder, not a serving artefact
        from keras_bert_lite.checkpoints import export_hf

        if args.quantize not in (None, "none") or args.calibration:
            raise KblError(
                "--quantize and --calibration apply to TFLite files; --format hf "
                "has none"
            )
        print(f"exporting {args.model} as hf -> {args.out}", flush=True)
        return export_hf(args.model, args.out)
    from keras_bert_lite.export import export_all, load_source, onnx, saved_model
    from keras_bert_lite.export import tflite as to_tflite
    from keras_bert_lite.export.bundle import quantizations
    from keras_bert_lite.export.manifest import read_manifest

    if args.format in ("saved_model", "onnx") and args.quantize not in (None, "none"):
        raise KblError(
            f"--quantize applies to TFLite files; --format {args.format} has none "
            "(use --format tflite or all)"
        )
    quantize = args.quantize or ("all" if args.format == "all" else "none")
    calibration = args.calibration
    if calibration is not None:
        if "int8" not in quantizations(quantize):
            raise KblError(
                "--calibration calibrates full int8 TFLite files; add --quantize "
                "int8 (or all) with --format tflite or all"
            )
        if not os.path.isfile(calibration):
            raise KblError(f"{calibration}: file not found (--calibration)")
    print(f"exporting {args.model} as {args.format} -> {args.out}", flush=True)
    if args.format == "all":
        return export_all(
            args.model, args.out, quantize=quantize, representative=calibration
        )
    source = load_source(args.model)
    if args.format == "saved_model":  # raw text, and ids only for stock servers
        written = [
            saved_model(source, args.out),
            saved_model(source, args.out, ids_only=True),
        ]
    elif args.format == "onnx":
        written = [onnx(source, args.out)]
    else:
        written = [
            to_tflite(source, args.out, mode, calibration)
            for mode in quantizations(quantize)
        ]
        written.append(to_tflite(source, args.out, ids_only=True))
    for path in written:
        print(f"  wrote {path}")
    return read_manifest(args.out)


def _cmd_verify(args) -> dict:
    from keras_bert_lite.export import verify

    return verify(args.export, data=args.data, limit=args.limit)


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line and exit status 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _wrapped_kbl_error(error: BaseException) -> str | None:
    """The message of a KblError that TensorFlow re-raised as its own error type
    (raised inside a tf.data generator or py_function), else None."""
    text = str(error)
    marker = "KblError: "
    if marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip().splitlines()[0]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kbl", description="Train your own BERT and ship it.")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback on errors and TensorFlow's C++ log",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("quickstart", help="the whole path on the built-in default data")
    p.add_argument("--out", default="kbl-quickstart", help="output directory")
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=400,
        help="pretraining steps (default 400)",
    )
    p.add_argument(
        "--verify-limit",
        type=_positive_int,
        default=300,
        help="dev records that `verify` runs through every format (default 300)",
    )
    p.add_argument("--json", help="also write the summary JSON here")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("vocab", help="learn a WordPiece vocabulary from corpus files")
    p.add_argument(
        "--corpus", nargs="+", required=True, help="files, directories, globs"
    )
    p.add_argument("--size", type=_positive_int, default=8192)
    p.add_argument("--out", required=True, help="vocab.txt to write")
    p.add_argument("--cased", action="store_true", help="keep case and accents")
    p.add_argument(
        "--format", default="auto", choices=["auto", "bert", "jsonl", "text"]
    )
    p.add_argument("--json", help="also write the result JSON here")
    p.set_defaults(func=_cmd_vocab)

    p = sub.add_parser("pretrain", help="pretrain a BERT (masked LM + NSP)")
    p.add_argument(
        "--corpus",
        nargs="+",
        help="files, directories, globs (default: the built-in default data)",
    )
    p.add_argument("--out", required=True, help="run directory")
    _add_vocabulary_options(p)
    p.add_argument(
        "--model",
        default="mini",
        help="preset (tiny, mini, small, medium, base) or a config.json",
    )
    p.add_argument(
        "--dropout",
        type=float,
        help="the model's dropout rate (default: the preset's or config.json's; "
        "presets have 0.1)",
    )
    _add_data_options(p)
    p.add_argument(
        "--records",
        help="train on examples prepared by `kbl prepare` (a directory) instead "
        "of a corpus",
    )
    p.add_argument(
        "--init",
        help="a pretraining run to start from: its vocabulary, model and weights "
        "go on learning from --corpus (domain-adaptive pretraining)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint; --steps or "
        "--epochs, the learning-rate schedule, the runtime switches and --seq-len "
        "may change",
    )
    p.add_argument(
        "--until",
        type=_positive_int,
        help="stop at this step of the --steps schedule (a checkpoint step) and "
        "write the weights; --resume continues the schedule (a phase of a run)",
    )
    p.add_argument(
        "--cache-mib",
        type=_non_negative_int,
        default=DEFAULT_CACHE_MIB,
        help="a corpus whose tokenized ids fit in this many MiB is read and "
        "tokenized once and kept in memory for later passes; a larger one streams "
        f"(default {DEFAULT_CACHE_MIB}; 0: always stream). Speed and memory only: "
        "the data stream is the same",
    )
    p.add_argument(
        "--json",
        help="also write the result JSON here (default: RUN/metrics.json only)",
    )
    _add_training_options(p, pretraining=True)
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser(
        "prepare",
        help="write masked pretraining examples to TFRecord shards (static masking)",
    )
    p.add_argument(
        "--corpus", nargs="+", required=True, help="files, directories, globs"
    )
    p.add_argument("--out", required=True, help="directory for the shards")
    _add_vocabulary_options(p)
    p.add_argument(
        "--seq-len", type=_positive_int, help="tokens per example (default 128)"
    )
    _add_data_options(p)
    p.add_argument(
        "--dupe-factor",
        type=_positive_int,
        default=5,
        help="passes over the corpus, each with new pairs and masks (default 5)",
    )
    p.add_argument(
        "--shards",
        type=_positive_int,
        default=8,
        help="training files to deal the examples to (default 8; at least the "
        "number of workers that will read them)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write prepare.json's content here")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("finetune", help="fine-tune on a task file")
    p.add_argument("--task", required=True, choices=["classify", "tag", "qa"])
    p.add_argument("--train", required=True, help="training file")
    p.add_argument("--dev", required=True, help="dev file, scored every epoch")
    p.add_argument(
        "--init",
        required=True,
        help="run directory to start from, or 'random' (needs --vocab)",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--model", default="mini", help="preset for --init random")
    p.add_argument("--vocab", help="vocab.txt for --init random")
    p.add_argument("--cased", action="store_true", help="with --init random")
    p.add_argument("--seq-len", type=_positive_int, default=128)
    p.add_argument("--epochs", type=_positive_int, default=3)
    p.add_argument(
        "--learning-rate",
        type=float,
        help="default by model size: 1e-4 (<=256 hidden), 5e-5, 2e-5",
    )
    p.add_argument(
        "--layer-decay",
        type=float,
        default=1.0,
        help="layer-wise learning-rate decay: each layer below the head trains at "
        "this factor of the rate of the one above, the embeddings lowest (e.g. 0.8; "
        "default 1: one rate)",
    )
    p.add_argument(
        "--patience",
        type=_positive_int,
        default=2,
        help="stop after this many epochs without a better dev score",
    )
    p.add_argument(
        "--doc-stride",
        type=_positive_int,
        help="QA: context pieces between window starts (default 128, or half a "
        "window's context where seq_len leaves less, so that windows overlap)",
    )
    p.add_argument("--max-query-len", type=_positive_int, default=64)
    p.add_argument(
        "--crf",
        action="store_true",
        help="tagging: a CRF layer on the tag scores (learned transitions)",
    )
    p.add_argument(
        "--pooling",
        choices=POOLING,
        default="cls",
        help="classification: read the pooled [CLS] output (BERT's classifier) or "
        "the mean of the token outputs",
    )
    p.add_argument(
        "--backbone-dropout",
        type=float,
        help="the encoder's dropout while fine-tuning (default: the model's; 0.1 "
        "suits a run pretrained without dropout)",
    )
    p.add_argument(
        "--max-train",
        type=_positive_int,
        help="train on a seeded random sample of this many records (default: all); "
        "the labels are still the whole training file's",
    )
    _add_training_options(p, pretraining=False)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out (give the same arguments)",
    )
    p.add_argument("--json", help="also write the result JSON here")
    p.set_defaults(func=_cmd_finetune)

    p = sub.add_parser("evaluate", help="task metrics of a fine-tuned run on a file")
    p.add_argument("--model", required=True, help="fine-tuned run directory")
    p.add_argument("--data", required=True, help="labelled task file")
    p.add_argument("--json", help="also write the metrics JSON here")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict labels or entities for raw text")
    p.add_argument(
        "--model",
        required=True,
        help="fine-tuned run directory, or an export: a .tflite or .onnx file, a "
        "SavedModel version directory, or the directory `kbl export` wrote",
    )
    p.add_argument("text", nargs="*", help="texts to classify or tag")
    p.add_argument(
        "--text-b",
        action="append",
        help="sentence pairs: the second text of each TEXT (repeat it, in order)",
    )
    p.add_argument(
        "--input",
        help="a task file (.jsonl, .csv, .tsv, .conll: what fine-tuning reads, labels "
        "not needed), a SQuAD .json for QA, or any other file: one text per line "
        "(- reads them from standard input); .gz is read transparently",
    )
    p.add_argument("--question", action="append", help="QA: a question (repeatable)")
    p.add_argument(
        "--context", action="append", help="QA: the context of each --question"
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="a multi-label classifier's decision threshold, 0 to 1 (default: the "
        "one tuned on dev)",
    )
    p.add_argument("--json", help="also write the predictions JSON here")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "import",
        help="a published BERT (Google TF1 or Hugging Face folder) as a run directory",
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="folder with bert_config.json, vocab.txt, bert_model.ckpt.* (Google) or "
        "config.json, vocab.txt, model.safetensors|pytorch_model.bin (Hugging Face)",
    )
    p.add_argument("--out", required=True, help="run directory to write")
    casing = p.add_mutually_exclusive_group()
    casing.add_argument(
        "--cased", action="store_true", help="keep case and accents (default: auto)"
    )
    casing.add_argument(
        "--uncased",
        action="store_true",
        help="lower-case and strip accents (default: tokenizer_config.json, the folder "
        "name, the vocabulary)",
    )
    p.add_argument("--json", help="also write the result JSON here")
    p.set_defaults(func=_cmd_import)

    # === export / verify ===
    p = sub.add_parser(
        "export", help="write a fine-tuned run as SavedModel, TFLite and ONNX"
    )
    p.add_argument("--model", required=True, help="fine-tuned run directory")
    p.add_argument(
        "--format",
        required=True,
        choices=["saved_model", "tflite", "onnx", "all", "hf"],
        help="hf: a Hugging Face BERT folder (config, vocab, safetensors)",
    )
    p.add_argument(
        "--quantize",
        choices=["none", "float16", "dynamic", "int8", "all"],
        help="TFLite variants besides float32 (default: all with --format all, "
        "none with --format tflite)",
    )
    p.add_argument(
        "--calibration",
        help="full int8: the texts to calibrate on, like those the model will see "
        "(a task file, or a .txt of one text per line; default: a sample of the "
        "run's training file)",
    )
    p.add_argument("--out", required=True, help="export directory")
    p.add_argument("--json", help="also write export.json's content here")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "verify", help="parity, task metric, size and latency of every export"
    )
    p.add_argument("--export", required=True, help="directory written by kbl export")
    p.add_argument("--data", help="labelled task file (default: the run's dev file)")
    p.add_argument(
        "--limit", type=_positive_int, help="use only the first N records of the file"
    )
    p.add_argument("--json", help="also write the report here (besides verify.json)")
    p.set_defaults(func=_cmd_verify)
    parser.commands = sub.choices  # the parser of each command, by name
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if not args.debug:
        _quiet_tensorflow()
    try:
        if getattr(args, "json", None):  # before the work, which may take hours
            from keras_bert_lite.io import require_file_path

            require_file_path(args.json, "--json")
        result = args.func(args)
    except KblError as e:
        if args.debug:
            raise
        print(f"kbl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kbl {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kbl predict ... | head`: the reader has gone
        # Python's own advice: point stdout at /dev/null, so that the flush at
        # exit does not raise again; 141 is what a shell reports for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # a KblError TensorFlow wrapped on its way out
        message = _wrapped_kbl_error(e)
        if message is None or args.debug:
            raise
        print(f"kbl {args.command}: error: {message}", file=sys.stderr)
        return 2
    if getattr(args, "json", None):
        from keras_bert_lite.io import write_json

        write_json(args.json, result)
    return 0
