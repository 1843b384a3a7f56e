"""Raw text -> class probabilities: per-text latency of our exports and ONNX Runtime.

    python benchmarks/inference.py [--quick] [--work DIR] [--out JSON] [--rounds N]

One text at a time (batch 1), one thread, over the first 300 sentences of the
movie-snippet dev set (../shared/data/cls/en), after warm-up calls on other dev
sentences; a call is timed from the Python string to the NumPy probabilities.
Side by side, each format in a process of its own (so TensorFlow's thread settings
hold from its start, and no format warms another's caches):

- ours, LiteRT with the tokenizer inside: `model.int8.tflite` (full int8),
  `model.dynamic.tflite` (int8 weights) and `model.tflite` (float32, reference),
  through `InterpreterWithCustomOps` (tensorflow-text kernels) and its signature
  runner, a NumPy object array of one string in. Our raw-text classifiers pack a
  batch to its longest row (at most seq_len), so batch 1 computes only the text's
  pieces;
- ONNX Runtime: Hugging Face `BertTokenizerFast` on the same vocab.txt, then our
  `model.onnx` (ids inputs, dynamic batch and sequence axes) in an
  `InferenceSession` with one intra-op and one inter-op thread and every graph
  optimisation; two length policies, padded to the model's seq_len and no padding
  (exactly the text's pieces); the faster one is ORT's number;
- ours, the SavedModel's raw-text `serving_default` (tokenizer inside), loaded with
  `tf.saved_model.load`, TensorFlow limited to one intra-op and one inter-op thread.

The model is a BERT-mini classifier (4 layers, 256 hidden, 4 heads, 1024
intermediate) at seq_len 128: `kbl finetune --init random` for one epoch on 256
training records (weights do not change latency), then `kbl export --format all`.
Both are cached in --work and reused while the settings stay the same.

Writes JSON (machine, versions, per format p50/p95/mean ms, size, length policy,
ratios to ORT's best p50, consistency checks) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from common import (
    REPO,
    RESULTS,
    SHARED,
    WORK,
    publish,
    read_json,
    require,
    vocabulary,
)
from common import machine as machine_info
from common import write_json as _write_json

TRAIN = os.path.join(SHARED, "cls", "en", "movie_snippets.train.jsonl")
DEV = os.path.join(SHARED, "cls", "en", "movie_snippets.dev.jsonl")
# A folder of our own under .work: other benchmarks keep their caches there too.
DEFAULT_WORK = os.path.join(WORK, "inference")
DEFAULT_OUT = os.path.join(RESULTS, "inference.json")

MODEL, SEQ_LEN = "mini", 128
TRAIN_RECORDS, DEV_RECORDS = 256, 64  # the slices the throwaway model trains on
TEXTS, QUICK_TEXTS = 300, 60
WARMUP, QUICK_WARMUP = 20, 10
# Our raw-text TFLite files, by the name the tables use -> `tflite(quantize=...)`.
QUANTIZE = {"int8": "int8", "dynamic": "dynamic", "float32": "none"}
LABELS = {"int8": "full int8", "dynamic": "dynamic-range int8", "float32": "float32"}
PREPARED = "prepared.json"
PREPARED_VERSION = 2  # bump when the cached export must be rebuilt
SECONDS_PER_WORKER = 900  # a worker that hangs is stopped, not waited on forever

# --- what is measured ---------------------------------------------------------


@dataclasses.dataclass
class Variant:
    """One measured row: a file, how it is fed, and its length policy."""

    name: str  # key in the JSON
    label: str  # row label in the tables
    kind: str  # "tflite", "onnx" or "saved_model"
    path: str  # the file (or SavedModel version directory)
    policy: str  # how long the sequences the model computes are
    padding: str = ""  # ONNX only: "max_length" or "none"
    seq_len: int = SEQ_LEN  # the T the file was exported with
    quantize: str = ""  # TFLite only: a key of QUANTIZE


FITTED = f"packed to the longest row, at most {SEQ_LEN} (in graph)"


def _tflite_name(quantize: str) -> str:
    """`kbl export`'s file name for a raw-text TFLite quantization."""
    mode = QUANTIZE[quantize]
    return "model.tflite" if mode == "none" else f"model.{mode}.tflite"


def main_variants(export: str) -> list[Variant]:
    """The side-by-side comparison: our raw-text files, ORT, the SavedModel."""
    rows = [
        Variant(
            f"tflite_{q}",
            f"TFLite {LABELS[q]}",
            "tflite",
            os.path.join(export, _tflite_name(q)),
            FITTED,
            quantize=q,
        )
        for q in QUANTIZE
    ]
    onnx = os.path.join(export, "model.onnx")
    label = "ORT + HF tokenizer"
    padded = f"padded to seq_len {SEQ_LEN}"
    rows += [
        Variant("ort_padded", label, "onnx", onnx, padded, padding="max_length"),
        Variant("ort_unpadded", label, "onnx", onnx, "no padding", padding="none"),
    ]
    saved = os.path.join(export, "saved_model", "1")
    rows.append(Variant("saved_model", "SavedModel", "saved_model", saved, FITTED))
    return rows


# --- preparing the model (cached) ---------------------------------------------


def _quiet_env() -> dict[str, str]:
    """The environment of every child: TensorFlow's logs down, one thread each."""
    env = dict(os.environ)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="2",
        # TensorFlow reads these at start (the workers also set its threading API);
        # OMP covers any OpenMP-built kernel.
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def _run(command: list[str], what: str) -> None:
    """Runs a child process; on failure stops with the tail of its output."""
    started = time.time()
    print(f"  {what} ...", flush=True)
    done = subprocess.run(
        command, capture_output=True, text=True, env=_quiet_env(), cwd=REPO
    )
    if done.returncode:
        tail = (done.stdout + done.stderr).strip().splitlines()[-25:]
        raise SystemExit(f"{what} failed ({done.returncode}):\n" + "\n".join(tail))
    print(f"  {what}: {time.time() - started:.0f}s", flush=True)


def _head(source: str, target: str, lines: int) -> None:
    """The first `lines` lines of a JSONL file."""
    with open(source, encoding="utf-8") as f, open(target, "w", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i >= lines:
                break
            g.write(line)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def prepare_export(work: str, args: argparse.Namespace) -> str:
    """The `kbl export --format all` directory of a throwaway BERT-mini classifier,
    trained and exported once and reused while the settings stay the same."""
    export = os.path.join(work, "export")
    needed = [
        *(_tflite_name(q) for q in QUANTIZE),
        "model.onnx",
        os.path.join("saved_model", "1", "saved_model.pb"),
    ]
    stamp = {
        "version": PREPARED_VERSION,
        "model": MODEL,
        "seq_len": SEQ_LEN,
        "vocab": os.path.abspath(args.vocab),
        "vocab_bytes": os.path.getsize(args.vocab),
        "train": os.path.abspath(args.train),
        "train_records": TRAIN_RECORDS,
        "dev_records": DEV_RECORDS,
    }
    if read_json(os.path.join(work, PREPARED)) == stamp and all(
        os.path.exists(os.path.join(export, n)) for n in needed
    ):
        print(f"reusing the export in {export}")
        return export
    print(f"preparing the model in {work} (once; a few minutes)")
    for stale in ("run", "export", "data", "length", "results", PREPARED):
        _remove(os.path.join(work, stale))
    data = os.path.join(work, "data")
    os.makedirs(data)
    train, dev = os.path.join(data, "train.jsonl"), os.path.join(data, "dev.jsonl")
    _head(args.train, train, TRAIN_RECORDS)
    _head(args.dev, dev, DEV_RECORDS)
    run = os.path.join(work, "run")
    kbl = [sys.executable, "-m", "keras_bert_lite"]
    finetune = [
        *kbl,
        "finetune",
        "--task=classify",
        "--init=random",
        f"--model={MODEL}",
        f"--vocab={args.vocab}",
        f"--train={train}",
        f"--dev={dev}",
        f"--seq-len={SEQ_LEN}",
        "--epochs=1",
        f"--max-train={TRAIN_RECORDS}",
        f"--out={run}",
    ]
    _run(finetune, "kbl finetune (1 epoch, random init)")
    _run(
        [*kbl, "export", f"--model={run}", "--format=all", f"--out={export}"],
        "kbl export --format all (int8 calibration included)",
    )
    _write_json(os.path.join(work, PREPARED), stamp)
    return export


# --- the workers: one process per variant ---------------------------------------


def hf_tokenizer(vocab: str) -> Any:
    """`BertTokenizerFast` on `vocab`, uncased, checked to have read the file.

    transformers 5 takes the file as `vocab` and silently ignores `vocab_file`
    (its vocabulary is then the five special tokens, and every word [UNK]); 4.x
    takes `vocab_file`.
    """
    from transformers import BertTokenizerFast

    parameters = inspect.signature(BertTokenizerFast.__init__).parameters
    key = "vocab" if "vocab" in parameters else "vocab_file"
    tokenizer = BertTokenizerFast(**{key: vocab}, do_lower_case=True)
    with open(vocab, encoding="utf-8") as f:
        size = sum(1 for _ in f)
    if tokenizer.vocab_size != size:
        raise RuntimeError(
            f"BertTokenizerFast read {tokenizer.vocab_size} of {size} tokens of {vocab}"
        )
    return tokenizer


def _tflite_runner(path: str) -> Callable[[str], tuple[Any, Any]]:
    """Our raw-text .tflite file: text -> (probabilities, token_ids)."""
    import numpy as np
    import tensorflow_text
    from ai_edge_litert.interpreter import InterpreterWithCustomOps

    runner = InterpreterWithCustomOps(
        custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS,
        model_path=path,
        num_threads=1,
    ).get_signature_runner()

    def run(text: str) -> tuple[Any, Any]:
        outputs = runner(text=np.array([text], dtype=object))
        return outputs["probabilities"], outputs["token_ids"]

    return run


def _predictor(spec: dict) -> tuple[Callable[[str], tuple[Any, Any]], dict]:
    """A callable text -> (probabilities [1, K], token ids [1, T] or None) for one
    variant, and its thread settings."""
    import numpy as np

    kind = spec["kind"]
    if kind == "saved_model":
        import tensorflow as tf

        # Before TensorFlow runs anything: afterwards these calls raise.
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

        serve = tf.saved_model.load(spec["path"]).signatures["serving_default"]

        def run_saved_model(text: str) -> tuple[Any, Any]:
            return serve(text=tf.constant([text]))["probabilities"].numpy(), None

        threads = {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        }
        return run_saved_model, threads
    if kind == "tflite":
        return _tflite_runner(spec["path"]), {"num_threads": 1}
    if kind == "onnx":
        import onnxruntime as ort

        tokenizer = hf_tokenizer(spec["vocab"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            spec["path"], options, providers=["CPUExecutionProvider"]
        )
        padding = "max_length" if spec["padding"] == "max_length" else False
        seq_len = spec["seq_len"]

        def run_onnx(text: str) -> tuple[Any, Any]:
            encoded = tokenizer(
                text,
                truncation=True,
                max_length=seq_len,
                padding=padding,
                return_tensors="np",
            )
            # Our model takes int32; the conversion is part of the client's work.
            token_ids = encoded["input_ids"].astype(np.int32)
            feed = {
                "token_ids": token_ids,
                "segment_ids": encoded["token_type_ids"].astype(np.int32),
                "padding_mask": encoded["attention_mask"].astype(np.int32),
            }
            return session.run(["probabilities"], feed)[0], token_ids

        threads = {"intra_op": 1, "inter_op": 1, "graph_optimization": "all"}
        return run_onnx, threads
    raise ValueError(f"unknown kind {kind!r}")


def _outputs(results: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Probabilities, token ids without padding, and the token_ids widths."""
    import numpy as np

    tokens, widths = [], set()
    for _, ids in results:
        if ids is not None:
            row = np.asarray(ids)[0]
            widths.add(int(row.shape[0]))
            tokens.append([int(i) for i in row[row != 0]])  # [PAD] is id 0
    return {
        "probabilities": [np.asarray(p, np.float64)[0].tolist() for p, _ in results],
        "tokens": tokens or None,
        "token_ids_widths": sorted(widths),
    }


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The collector would land its pauses on whichever call it interrupts."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def measure(spec: dict) -> dict:
    """Child process: warm-up calls, then one timed call per text."""
    texts = read_json(spec["texts"])
    started = time.perf_counter()
    predict, threads = _predictor(spec)
    load_s = time.perf_counter() - started
    for text in texts["warmup"]:
        predict(text)
    seconds, results = [], []
    with _no_gc():
        for text in texts["timed"]:
            began = time.perf_counter()
            result = predict(text)
            seconds.append(time.perf_counter() - began)
            results.append(result)
    return {
        "latency_ms": [s * 1000.0 for s in seconds],
        **_outputs(results),
        "load_s": load_s,
        "threads": threads,
    }


def _child(flag: str, spec: dict) -> dict:
    """Runs a worker in a fresh process and returns what it wrote, or
    {"error": ...} when it fails."""
    result_path = spec["result"]
    _remove(result_path)
    command = [sys.executable, os.path.abspath(__file__), flag, json.dumps(spec)]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=_quiet_env(),
            cwd=REPO,
            timeout=SECONDS_PER_WORKER,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {SECONDS_PER_WORKER}s"}
    result = read_json(result_path)
    if done.returncode or result is None:
        tail = (done.stdout + done.stderr).strip().splitlines()[-8:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    return result


# --- reporting ----------------------------------------------------------------


def _stats(ms: Sequence[float]) -> dict[str, float]:
    import numpy as np

    values = np.asarray(ms, np.float64)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "mean_ms": float(values.mean()),
        "min_ms": float(values.min()),
    }


def _row(variant: Variant, result: dict) -> dict[str, Any]:
    """One format's line of the report."""
    import numpy as np

    from keras_bert_lite.export.manifest import size_of

    path = variant.path
    row: dict[str, Any] = {
        "label": variant.label,
        "input": "text" if variant.kind != "onnx" else "text (HF tokenizer) -> ids",
        "length_policy": variant.policy,
        "seq_len": variant.seq_len,
        "file": os.path.relpath(path, REPO) if path.startswith(REPO) else path,
        "size_mb": size_of(path) / 2**20 if os.path.exists(path) else None,
    }
    if variant.kind == "onnx":
        row["size_note"] = "model.onnx; the HF tokenizer also reads vocab.txt"
    if "error" in result:
        row["error"] = result["error"]
        return row
    row.update(_stats(result["latency_ms"]))
    if len(result.get("rounds", [])) > 1:
        row["rounds_p50_ms"] = [float(np.percentile(r, 50)) for r in result["rounds"]]
    row["threads"] = result["threads"]
    if "load_s" in result:
        row["load_s"] = result["load_s"]
    widths = result.get("token_ids_widths")
    if widths:  # the raw-text files' contract: always seq_len wide
        row["token_ids_width"] = (
            str(widths[0]) if len(widths) == 1 else f"{widths[0]}..{widths[-1]}"
        )
    return row


def analyse(variants: list[Variant], results: dict[str, dict]) -> dict[str, Any]:
    """Stats per variant, ORT's best policy, the ratios and the checks."""
    formats = {v.name: _row(v, results[v.name]) for v in variants}
    ort = {
        n: formats[n]["p50_ms"]
        for n in ("ort_padded", "ort_unpadded")
        if formats.get(n, {}).get("p50_ms") is not None
    }
    best = min(ort, key=ort.get) if ort else None
    report: dict[str, Any] = {"formats": formats, "ort_best": best}
    if best:
        for row in formats.values():
            if row.get("p50_ms") is not None:
                row["p50_vs_ort_best"] = row["p50_ms"] / ort[best]
        report["goal"] = "TFLite int8 p50 / ORT best p50 <= 0.5"
        report["ratios"] = {
            f"{name} p50 / ORT best p50": formats[name]["p50_vs_ort_best"]
            for name in ("tflite_int8", "tflite_dynamic", "tflite_float32")
            if formats.get(name, {}).get("p50_vs_ort_best") is not None
        }
        ratio = report["ratios"].get("tflite_int8 p50 / ORT best p50")
        report["goal_met"] = None if ratio is None else ratio <= 0.5
    report["checks"] = _checks(results)
    return report


def _same_rows(a: Sequence[list[int]], b: Sequence[list[int]]) -> str:
    """How many rows of token ids (padding dropped) two variants share: "n/total"."""
    same = sum(x == y for x, y in zip(a, b, strict=True))
    return f"{same}/{len(b)}"


def _checks(results: dict[str, dict]) -> dict[str, Any]:
    """Do the rows compute the same thing? Token ids of our graph against the HF
    tokenizer's, probabilities against our float32 file."""
    import numpy as np

    ok = {n: r for n, r in results.items() if "error" not in r}
    reference = ok.get("tflite_float32")
    if reference is None or not reference.get("tokens"):
        return {}
    checks: dict[str, Any] = {}
    if ok.get("ort_unpadded", {}).get("tokens"):
        checks["hf_tokenizer_same_ids"] = _same_rows(
            reference["tokens"], ok["ort_unpadded"]["tokens"]
        )
    expected = np.asarray(reference["probabilities"])
    checks["max_abs_diff_vs_tflite_float32"] = {
        name: float(np.abs(np.asarray(r["probabilities"]) - expected).max())
        for name, r in ok.items()
        if name != "tflite_float32"
    }
    return checks


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def tables(report: dict) -> str:
    """The report as markdown tables."""
    lines = [
        f"{report['texts']['timed']} texts, batch 1, one thread; ORT's best length "
        f"policy: {report.get('ort_best')}",
        "",
        "| format | length policy | size MB | p50 ms | p95 ms | mean ms "
        "| p50 / ORT best |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["formats"].values():
        head = f"| {row['label']} | {row['length_policy']} | "
        if "error" in row:
            lines.append(head + f"failed: {row['error'][:100]} | | | | |")
            continue
        lines.append(
            head + f"{_fmt(row['size_mb'], '.1f')} | {row['p50_ms']:.2f} | "
            f"{row['p95_ms']:.2f} | {row['mean_ms']:.2f} | "
            f"{_fmt(row.get('p50_vs_ort_best'))} |"
        )
    if report.get("ratios"):
        lines += ["", f"Ratios (goal: {report['goal']}):", ""]
        lines += [f"- {k} = {v:.2f}" for k, v in report["ratios"].items()]
    if report.get("checks"):
        lines += ["", "Checks: " + json.dumps(report["checks"])]
    return "\n".join(lines)


# --- the command line ---------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_TEXTS} texts")
    p.add_argument("--work", default=DEFAULT_WORK, help="cache for model and exports")
    p.add_argument("--out", default=DEFAULT_OUT, help="the JSON report to write")
    p.add_argument("--texts", type=int, help=f"timed texts (default {TEXTS})")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every format this many times, in rotated order, and pool "
        "the latencies (evens out a busy machine's drift)",
    )
    p.add_argument("--train", default=TRAIN, help="training JSONL (a slice is used)")
    p.add_argument("--dev", default=DEV, help="dev JSONL: the timed texts")
    p.add_argument(
        "--vocab",
        default=None,
        help="WordPiece vocab.txt (default: the benchmarks' vocabulary, learned "
        "once from the SOTU corpus)",
    )
    p.add_argument("--note", help="recorded in the JSON (e.g. what else was running)")
    # Children of this script.
    p.add_argument("--measure", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _measure_all(
    variants: list[Variant],
    rounds: int,
    common: dict[str, str],
    scratch: str,
) -> dict[str, dict]:
    """Every variant in its own process (`rounds` times, order rotated, latencies
    pooled)."""
    results: dict[str, dict] = {}
    for r in range(rounds):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            spec = {
                **dataclasses.asdict(v),
                **common,
                "result": os.path.join(scratch, f"{v.name}.json"),
            }
            result = _child("--measure", spec)
            if "error" in result:
                shown = result["error"][:160]
                results.setdefault(v.name, result)  # a failed row stays failed
            else:
                shown = f"p50 {_stats(result['latency_ms'])['p50_ms']:.2f} ms"
                pooled = results.setdefault(v.name, {**result, "rounds": []})
                if "error" not in pooled:
                    pooled["rounds"].append(result["latency_ms"])
                    # Every round gives the same outputs; only the times are pooled.
                    pooled["latency_ms"] = sum(pooled["rounds"], [])
            print(f"  [{r + 1}/{rounds}] {v.name}: {shown}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark (or, with the hidden flags, one child's job)."""
    args = _parse(argv)
    if args.measure:
        spec = json.loads(args.measure)
        _write_json(spec["result"], measure(spec))
        return 0
    args.vocab = args.vocab or vocabulary()
    for path in (args.train, args.dev, args.vocab):
        require(path)
    if args.rounds < 1 or (args.texts is not None and args.texts < 1):
        print("--rounds and --texts must be at least 1", file=sys.stderr)
        return 2
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    info = machine_info()
    with open(args.dev, encoding="utf-8") as f:
        dev = [json.loads(line)["text"] for line in f if line.strip()]
    count = args.texts or (QUICK_TEXTS if args.quick else TEXTS)
    warmup = QUICK_WARMUP if args.quick else WARMUP
    if count + warmup > len(dev):
        print(f"{args.dev} has {len(dev)} texts; ask for fewer", file=sys.stderr)
        return 2
    # Warm-up on texts from the end of the file, never on the timed ones.
    texts_path = os.path.join(work, "texts.json")
    _write_json(texts_path, {"timed": dev[:count], "warmup": dev[-warmup:]})

    export = prepare_export(work, args)
    variants = main_variants(export)
    scratch = os.path.join(work, "results")
    os.makedirs(scratch, exist_ok=True)
    print(f"measuring {len(variants)} formats x {args.rounds} round(s), {count} texts")
    common = {"texts": texts_path, "vocab": os.path.abspath(args.vocab)}
    results = _measure_all(variants, args.rounds, common, scratch)

    info["loadavg_end"] = list(os.getloadavg())
    report = {
        "benchmark": "raw text -> class probabilities, batch 1, one thread",
        "machine": info,
        "note": args.note,
        "model": {
            "preset": MODEL,
            "layers": 4,
            "hidden": 256,
            "heads": 4,
            "intermediate": 1024,
            "seq_len": SEQ_LEN,
            "vocab": os.path.abspath(args.vocab),
            "weights": f"random init, 1 epoch on {TRAIN_RECORDS} records",
            "export": export,
        },
        "data": os.path.abspath(args.dev),
        "texts": {
            "timed": count,
            "which": f"the first {count} lines of the dev file",
            "warmup_calls": warmup,
            "warmup_texts": f"the last {warmup} lines of the dev file",
        },
        "rounds": args.rounds,
        **analyse(variants, results),
    }
    publish(args.out, report, tables(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
