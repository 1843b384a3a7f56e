"""`kbl`: thin command-line shells over the library functions.

Every command prints progress, writes machine-readable JSON beside its human output,
and on bad input exits with status 2 and a one-line reason (`--debug` for a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from keras_bert_lite.errors import KblError


def _quiet_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up chatter kept off the terminal.

    On machines without a GPU it probes CUDA and logs errors that no environment
    variable silences; they bury the progress lines users need. `--debug` skips this.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - registers the ops

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got '{text}'"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seq-len",
        type=_positive_int,
        default=128,
        help="tokens per example (default 128)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="global batch size (default 32)",
    )
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=_positive_int, help="optimizer steps in total")
    steps.add_argument("--epochs", type=_positive_int, help="passes over the corpus")
    p.add_argument(
        "--eval-every",
        type=_positive_int,
        help="steps between held-out evaluations and checkpoints "
        "(default: a tenth of the run)",
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="peak learning rate after warm-up (default 1e-3)",
    )
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
    )
    p.add_argument(
        "--strategy", default="auto", choices=["auto", "default", "mirrored"]
    )
    p.add_argument(
        "--xla",
        default="auto",
        choices=["auto", "on", "off"],
        help="XLA-compile the train step (auto: where it was measured faster)",
    )
    p.add_argument("--seed", type=int, default=0)


def _cmd_vocab(args) -> dict:
    from keras_bert_lite.data.corpus import CorpusStats, read_documents, require_text
    from keras_bert_lite.io import write_text
    from keras_bert_lite.text import learn_vocabulary

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
    return result


def _pretrain_kwargs(args) -> dict:
    kwargs = dict(
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        steps=args.steps,
        epochs=args.epochs,
        eval_every=args.eval_every,
        learning_rate=args.learning_rate,
        precision=args.precision,
        strategy=args.strategy,
        seed=args.seed,
        jit_compile={"auto": "auto", "on": True, "off": False}[args.xla],
    )
    return kwargs


def _cmd_pretrain(args) -> dict:
    from keras_bert_lite.training import pretrain

    options = _pretrain_kwargs(args)
    options.update(
        nsp=not args.no_nsp,
        whole_word_mask=args.whole_word_mask,
        lowercase=not args.cased,
        held_out=args.held_out,
    )
    result = pretrain(
        args.corpus,
        args.out,
        vocab=args.vocab,
        model=args.model,
        vocabulary_size=args.vocab_size,
        resume=args.resume,
        corpus_format=args.format,
        **({} if args.resume else options),
    )
    return {
        "run": result.run,
        "steps": result.steps,
        "metrics": result.metrics,
        "tokens_per_second": result.tokens_per_second,
        "seconds": result.seconds,
    }


def _cmd_quickstart(args) -> dict:
    from keras_bert_lite.training import pretrain

    started = time.time()
    out = args.out
    run = os.path.join(out, "pretrain")
    print(
        f"kbl quickstart: the whole path on the built-in default data -> {out}\n"
        "step 1/1: learn a vocabulary and pretrain a tiny BERT (masked LM + NSP)",
        flush=True,
    )
    result = pretrain(
        None,
        run,
        model="tiny",
        vocabulary_size=4096,
        seq_len=64,
        batch_size=32,
        steps=args.steps,
        learning_rate=1e-3,
        resume=os.path.exists(os.path.join(run, "config.json")),
    )
    summary = {
        "run": run,
        "steps": result.steps,
        "metrics": result.metrics,
        "tokens_per_second": result.tokens_per_second,
        "seconds": time.time() - started,
    }
    print(
        f"\nquickstart finished in {summary['seconds']:.0f}s. The pretrained run is in "
        f"{run}:\n  config.json vocab.txt model.weights.h5 history.csv metrics.json "
        f"tensorboard/ checkpoints/\n"
        "Next: `kbl pretrain --corpus YOUR_FILES --out RUN` "
        "on your own text."
    )
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kbl", description="Train your own BERT and ship it."
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback on errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="the whole path on the built-in default data")
    p.add_argument("--out", default="kbl-quickstart", help="output directory")
    p.add_argument("--steps", type=_positive_int, default=300)
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
    p.add_argument("--vocab", help="vocab.txt to use (default: learn one)")
    p.add_argument(
        "--vocab-size",
        type=_positive_int,
        default=8192,
        help="size of the vocabulary to learn (default 8192)",
    )
    p.add_argument(
        "--model",
        default="mini",
        help="preset (tiny, mini, small, medium, base) or a config.json",
    )
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
        default=0.05,
        help="share of documents held out for evaluation (default 0.05)",
    )
    p.add_argument(
        "--format", default="auto", choices=["auto", "bert", "jsonl", "text"]
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint",
    )
    p.add_argument(
        "--json",
        help="also write the result JSON here (default: RUN/metrics.json only)",
    )
    _add_training_options(p)
    p.set_defaults(func=_cmd_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        _quiet_tensorflow()
    try:
        result = args.func(args)
    except KblError as e:
        if args.debug:
            raise
        print(f"kbl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kbl {args.command}: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", None):
        from keras_bert_lite.io import write_json

        write_json(args.json, result)
    return 0
