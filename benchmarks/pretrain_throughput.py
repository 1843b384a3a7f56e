"""BERT pretraining throughput side by side: ours, keras-hub and Hugging Face.

    python benchmarks/pretrain_throughput.py [--quick] [--sizes mini,small]
        [--frameworks ours,keras_hub,pytorch] [--repeats N]
        [--out benchmarks/results/pretrain_throughput.json]

Throughput is training tokens per second, where a step's tokens are batch x seq_len
(padding included) per optimizer step: 32 x 128, with 20 masked-LM prediction slots
per sequence. Every contender trains on the same 20 real batches of the State of the
Union corpus made by `kbl.data.pretraining_dataset` (learned 7,869-piece WordPiece
vocabulary), held in memory and repeated, so only the model step is timed:

- ours: `keras_bert_lite` `BertPretrainer` (masked LM + next-sentence prediction),
  `bert_optimizer` (AdamW, warm-up/linear decay, global clip 1.0), `model.fit`;
- keras-hub: `BertBackbone` + `BertMaskedLM(preprocessor=None)` compiled as its docs
  show (SparseCategoricalCrossentropy from logits, weighted accuracy), with Keras
  AdamW (same hyperparameters, global clip 1.0); it has no NSP head;
- PyTorch: transformers' `BertForPreTraining` (masked LM + NSP), `torch.optim.AdamW`
  and `clip_grad_norm_(1.0)`, CPU, `torch.set_num_threads(2)`.

Each framework runs at every setting of its grid, each setting in a fresh process
(TensorFlow and PyTorch in one process fight over threads, and an XLA or precision
change is cleanest in a new runtime): Keras ones at float32 / mixed_bfloat16 x XLA
on / off, PyTorch at float32 eager, bfloat16 autocast eager and float32
`torch.compile`. A setting that fails or times out is recorded with its error; the
rest still run. With `--repeats` the whole grid is run that many times, interleaved.

Step time: for Keras, the interval between consecutive `on_train_batch_end` calls of
a callback (the loss is read there, which waits for the step); for PyTorch, the
whole step (forward, backward, clip, optimizer step). Throughput uses the median step
time after `--warmup` steps (the first step also traces / compiles).

Model FLOPs utilisation (MFU) = tokens/s x FLOPs per token / peak FLOP/s, with

    FLOPs/token = 6 * L * (4*D*D + 2*D*I)          encoder matmul weights
                + 12 * L * T * D                   attention: QK^T and AV, fwd+bwd
                + 6 * (D*D + D*V) * P / T          MLM head, masked positions only

(L layers, D hidden, I intermediate, T seq_len, V vocabulary, P predictions; the
embeddings, LayerNorms, pooler and NSP head are left out). These are model FLOPs:
a peer that computes the MLM head at every position (transformers' BertForPreTraining)
is credited the same count, not the work it actually does. Peak FLOP/s is the best
2048x2048x2048 matmul measured in the same run: float32 (TensorFlow and torch, the
higher) and bfloat16 (likewise); MFU is reported against both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

import common
from common import HERE, REPO, SOTU, machine, require

SEQ_LEN, BATCH, PREDICTIONS = 128, 32, 20
MATMUL_N = 2048
# A real pretraining run's length, to ask ours which setting it would choose: the
# "auto" XLA choice turns XLA off for short runs, which a benchmark of a few dozen
# steps would be, but not what a user training for thousands of steps gets.
REAL_RUN_STEPS = 10_000

# layers / hidden / heads / intermediate (the BERT "compact models" table).
SIZES: dict[str, dict[str, int]] = {
    "mini": dict(num_layers=4, hidden_dim=256, num_heads=4, intermediate_dim=1024),
    "small": dict(num_layers=4, hidden_dim=512, num_heads=8, intermediate_dim=2048),
}
FRAMEWORKS = ("ours", "keras_hub", "pytorch")
BF16_UNITS = {"avx512_bf16", "amx_bf16"}  # CPU flags of native bfloat16 matmuls

NOTES = [
    "tokens = batch x seq_len per optimizer step (padding included)",
    "every framework trains on the same in-memory batches from "
    "kbl.data.pretraining_dataset, repeated; only the model step is timed",
    "keras_hub: BertMaskedLM has no NSP head (masked LM only), so it does slightly "
    "less work per step than ours and PyTorch (pooler + NSP head + NSP loss)",
    "pytorch: BertForPreTraining computes MLM logits at all seq_len positions "
    "(T/P = 6.4x the masked-only head's FLOPs) and is credited the same model "
    "FLOPs as the others (model FLOPs, not hardware FLOPs)",
    "dropout 0.1 everywhere; keras_hub and transformers also drop attention "
    "probabilities, ours does not (embeddings, attention output, FFN output)",
    "optimizers: ours bert_optimizer (AdamW wd 0.01 with LayerNorm/bias exempt, "
    "eps 1e-6, warm-up + linear decay, global clip 1.0); keras_hub Keras AdamW "
    "(wd 0.01, eps 1e-6, global clip 1.0, constant lr); pytorch torch AdamW "
    "(wd 0.01, eps 1e-6) + clip_grad_norm_(1.0)",
    "MFU vs a peak = tokens/s x flops_per_token / peak; the peak of a dtype is the "
    "best of TensorFlow's and torch's 2048^3 matmul in this run",
]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One point of a framework's grid: precision and graph compilation."""

    framework: str  # ours | keras_hub | pytorch
    precision: str  # float32 | mixed_bfloat16 (Keras) | bfloat16_autocast (torch)
    compiled: bool  # XLA (Keras jit_compile) or torch.compile

    @property
    def label(self) -> str:
        how = "xla" if self.framework != "pytorch" else "compile"
        state = "on" if self.compiled else "off"
        return f"{self.framework}/{self.precision}/{how}={state}"


def grid(frameworks: list[str]) -> list[Setting]:
    """Every setting of the requested frameworks, cheapest-to-start first within
    each (eager before compiled), frameworks interleaved per setting kind."""
    out: list[Setting] = []
    for framework in frameworks:
        if framework == "pytorch":
            out += [
                Setting("pytorch", "float32", False),
                Setting("pytorch", "bfloat16_autocast", False),
                Setting("pytorch", "float32", True),
            ]
        else:
            out += [
                Setting(framework, precision, xla)
                for xla in (False, True)
                for precision in ("float32", "mixed_bfloat16")
            ]
    return out


def skipped(size: str, setting: Setting, info: dict[str, Any]) -> str | None:
    """Why a setting is not run, or None. On a CPU without bfloat16 units (no
    AVX512-BF16, no AMX) bfloat16 is emulated: it is measured on `mini`, where it
    loses to float32 several times over, and not repeated on the larger sizes, where
    a step would take minutes."""
    units = BF16_UNITS & set(info.get("flags", []))
    if size != "mini" and "bfloat16" in setting.precision and not units:
        return "no bfloat16 units on this CPU; measured on mini only"
    return None


def flops_per_token(size: dict[str, int], vocabulary: int) -> dict[str, float]:
    """Model FLOPs per training token (forward + backward), by part.

    6 FLOPs per weight per token for a matmul (2 forward, 4 backward); attention's
    two activation-activation matmuls (QK^T and AV) cost 2*T*D each forward, so
    12*T*D per layer forward + backward; the MLM head (dense D*D + tied output D*V)
    runs at P of the T positions.
    """
    layers, d, inter = size["num_layers"], size["hidden_dim"], size["intermediate_dim"]
    encoder = 6 * layers * (4 * d * d + 2 * d * inter)
    attention = 12 * layers * SEQ_LEN * d
    mlm_head = 6 * (d * d + d * vocabulary) * PREDICTIONS / SEQ_LEN
    return {
        "encoder": float(encoder),
        "attention": float(attention),
        "mlm_head": float(mlm_head),
        "total": float(encoder + attention + mlm_head),
        "non_embedding_params": float(layers * (4 * d * d + 2 * d * inter)),
    }


# === Workers: each runs in its own process (`--worker SPEC --result FILE`). ===


def _quiet_tensorflow() -> None:
    """Keras on TensorFlow, without the C++ start-up chatter."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def worker_data(spec: dict[str, Any]) -> dict[str, Any]:
    """Takes `batches` real batches from ours' pipeline into an .npz, and asks ours
    which precision and XLA setting it would choose on this machine."""
    _quiet_tensorflow()
    import numpy as np

    from keras_bert_lite.config import DataConfig
    from keras_bert_lite.data.pretraining import pretraining_dataset
    from keras_bert_lite.text import BertTokenizer
    from keras_bert_lite.training.strategy import (
        resolve_jit_compile,
        resolve_precision,
    )

    tokenizer = BertTokenizer.from_file(spec["vocab"])
    start = time.perf_counter()
    ds = pretraining_dataset(
        [spec["corpus"]],
        tokenizer,
        batch_size=BATCH,
        config=DataConfig(seq_len=SEQ_LEN, max_predictions=PREDICTIONS),
        repeat=True,
        drop_remainder=True,
    )
    batches = list(ds.take(spec["batches"]).as_numpy_iterator())
    seconds = time.perf_counter() - start
    arrays = {}
    for part in range(3):  # (inputs, targets, sample_weights), each a dict
        for key in batches[0][part]:
            arrays[key] = np.stack([b[part][key] for b in batches])
    np.savez(spec["path"], **arrays)
    precision = resolve_precision("auto")
    return {
        "vocabulary_size": tokenizer.vocabulary_size,
        "batches": len(batches),
        "seconds_to_make": seconds,
        "real_token_share": float(arrays["padding_mask"].mean()),
        "masked_slots_per_sequence": float(arrays["mask_weights"].sum(-1).mean()),
        "nsp_not_next_share": float(arrays["nsp_labels"].mean()),
        "shapes": {k: list(v.shape[1:]) for k, v in arrays.items()},
        "ours_default": {
            "precision": precision,
            "xla": resolve_jit_compile("auto", precision, None, REAL_RUN_STEPS),
            "for_steps": REAL_RUN_STEPS,
        },
    }


def _best_gflops(matmul, reps: int) -> dict[str, float]:
    """GFLOP/s of an n^3 matmul: the best and the median of `reps` timed calls
    (after two warm-up calls). `matmul()` must return only once the product is
    done (eager TensorFlow and torch on a CPU are synchronous)."""
    flops = 2.0 * MATMUL_N**3
    for _ in range(2):
        matmul()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        matmul()
        times.append(time.perf_counter() - start)
    return {
        "gflops_best": flops / min(times) / 1e9,
        "gflops_median": flops / statistics.median(times) / 1e9,
    }


def worker_peak_tensorflow(spec: dict[str, Any]) -> dict[str, Any]:
    """TensorFlow's 2048^3 matmul GFLOP/s in float32 and bfloat16."""
    _quiet_tensorflow()
    import tensorflow as tf

    out: dict[str, Any] = {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.normal((MATMUL_N, MATMUL_N)), dtype)
        b = tf.cast(tf.random.normal((MATMUL_N, MATMUL_N)), dtype)
        out[dtype] = _best_gflops(lambda a=a, b=b: tf.matmul(a, b), spec["reps"])
    return out


def worker_peak_torch(spec: dict[str, Any]) -> dict[str, Any]:
    """torch's 2048^3 matmul GFLOP/s in float32 and bfloat16, on 2 threads. On a
    CPU without bfloat16 units torch's bfloat16 matmul takes minutes (measured:
    over 300 s for the timed calls), so only float32 is measured there."""
    import torch

    torch.set_num_threads(spec["threads"])
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    dtypes = [("float32", torch.float32)]
    if spec["bf16_units"]:
        dtypes.append(("bfloat16", torch.bfloat16))
    else:
        out["bfloat16_skipped"] = "no bfloat16 units on this CPU"
    for name, dtype in dtypes:
        a = torch.randn(MATMUL_N, MATMUL_N, dtype=dtype)
        b = torch.randn(MATMUL_N, MATMUL_N, dtype=dtype)
        with torch.no_grad():
            out[name] = _best_gflops(lambda a=a, b=b: a @ b, spec["reps"])
    return out


def _summary(times: list[float], warmup: int, losses: list[float]) -> dict[str, Any]:
    """Throughput from per-step seconds; the first `warmup` steps are dropped."""
    measured = times[warmup:]
    median = statistics.median(measured)
    return {
        "steps_measured": len(measured),
        "warmup_steps": warmup,
        "first_step_s": times[0],  # includes tracing and XLA / inductor compilation
        "step_ms_median": median * 1e3,
        "step_ms_mean": statistics.fmean(measured) * 1e3,
        "step_ms_min": min(measured) * 1e3,
        "step_ms_max": max(measured) * 1e3,
        "tokens_per_second": BATCH * SEQ_LEN / median,
        "step_seconds": measured,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


def worker_keras(spec: dict[str, Any]) -> dict[str, Any]:
    """Trains ours or keras-hub's model with `model.fit` on the saved batches."""
    _quiet_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    size, framework = SIZES[spec["size"]], spec["framework"]
    policy, xla = spec["precision"], spec["compiled"]
    vocabulary = spec["vocabulary_size"]
    arrays = dict(np.load(spec["data"]))
    inputs = {k: arrays[k] for k in ("token_ids", "segment_ids", "padding_mask")} | {
        "mask_positions": arrays["mask_positions"]
    }

    build_start = time.perf_counter()
    if framework == "ours":
        from keras_bert_lite.config import BertConfig
        from keras_bert_lite.models import BertBackbone, BertPretrainer
        from keras_bert_lite.training.optimizer import bert_optimizer

        config = BertConfig.from_preset(spec["size"], vocabulary_size=vocabulary)
        model = BertPretrainer(BertBackbone(**config.to_dict(), dtype=policy), nsp=True)
        model.compile(
            optimizer=bert_optimizer(1e-4, total_steps=1000, warmup=0.1),
            jit_compile=xla,
        )
        # Exactly the (inputs, targets, sample_weights) layout our pipeline yields.
        elements = (
            inputs,
            {"mask_ids": arrays["mask_ids"], "nsp_labels": arrays["nsp_labels"]},
            {"mask_weights": arrays["mask_weights"]},
        )
    else:
        import keras_hub

        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=vocabulary,
            max_sequence_length=512,
            dtype=policy,
            **size,
        )
        model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
        model.compile(
            optimizer=keras.optimizers.AdamW(
                1e-4, weight_decay=0.01, epsilon=1e-6, global_clipnorm=1.0
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
            jit_compile=xla,
        )
        elements = (inputs, arrays["mask_ids"], arrays["mask_weights"])
    build_s = time.perf_counter() - build_start
    # Stacked batches sliced along the first axis: each element is one whole batch
    # with static shapes, served from memory.
    ds = tf.data.Dataset.from_tensor_slices(elements).repeat().prefetch(2)

    class StepTimer(keras.callbacks.Callback):
        """Seconds between consecutive batch ends: the whole step as fit runs it.
        Reading the loss waits for the step to finish."""

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.losses: list[float] = []
            self.last = 0.0

        def on_train_begin(self, logs=None) -> None:
            self.last = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.losses.append(float(logs["loss"]))
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    timer = StepTimer()
    steps = spec["warmup"] + spec["steps"]
    model.fit(
        ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False, callbacks=[timer]
    )
    result = _summary(timer.times, spec["warmup"], timer.losses)
    result.update(
        build_s=build_s,
        trainable_params=int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        # Layers with weights not under the requested policy: a head left in
        # float32 under mixed_bfloat16 changes what the setting measures.
        layers_off_policy=sorted(
            f"{layer.name} ({layer.dtype_policy.name})"
            for layer in model._flatten_layers(include_self=False)
            if layer.weights
            and not isinstance(layer, keras.Model)  # a model's policy is unused
            and layer.dtype_policy.name != policy
        ),
    )
    return result


def worker_torch(spec: dict[str, Any]) -> dict[str, Any]:
    """Trains transformers' BertForPreTraining on the saved batches."""
    import contextlib

    import numpy as np
    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    size = SIZES[spec["size"]]
    arrays = np.load(spec["data"])

    def tensor(key: str, index: int) -> torch.Tensor:
        return torch.from_numpy(arrays[key][index].astype(np.int64))

    batches = []
    for i in range(arrays["token_ids"].shape[0]):
        # -100 (ignored) everywhere but the used prediction slots; unused slots
        # (weight 0) point at position 0 and must stay ignored.
        labels = torch.full((BATCH, SEQ_LEN), -100, dtype=torch.int64)
        used = torch.from_numpy(arrays["mask_weights"][i] > 0)
        rows = torch.arange(BATCH)[:, None].expand(-1, PREDICTIONS)
        positions = tensor("mask_positions", i)
        labels[rows[used], positions[used]] = tensor("mask_ids", i)[used]
        batches.append(
            dict(
                input_ids=tensor("token_ids", i),
                token_type_ids=tensor("segment_ids", i),
                attention_mask=tensor("padding_mask", i),
                labels=labels,
                next_sentence_label=tensor("nsp_labels", i),
            )
        )

    build_start = time.perf_counter()
    config = BertConfig(
        vocab_size=spec["vocabulary_size"],
        hidden_size=size["hidden_dim"],
        num_hidden_layers=size["num_layers"],
        num_attention_heads=size["num_heads"],
        intermediate_size=size["intermediate_dim"],
        max_position_embeddings=512,
        type_vocab_size=2,
    )
    model = BertForPreTraining(config)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6
    )
    forward = torch.compile(model) if spec["compiled"] else model
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if spec["precision"] == "bfloat16_autocast"
        else contextlib.nullcontext
    )
    build_s = time.perf_counter() - build_start

    times, losses = [], []
    for step in range(spec["warmup"] + spec["steps"]):
        batch = batches[step % len(batches)]
        start = time.perf_counter()
        with autocast():
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        times.append(time.perf_counter() - start)
    result = _summary(times, spec["warmup"], losses)
    result.update(
        build_s=build_s,
        trainable_params=sum(p.numel() for p in model.parameters()),
        threads=torch.get_num_threads(),
        attention_implementation=getattr(config, "_attn_implementation", None),
    )
    return result


WORKERS = {
    "data": worker_data,
    "peak_tensorflow": worker_peak_tensorflow,
    "peak_torch": worker_peak_torch,
    "keras": worker_keras,
    "torch": worker_torch,
}


def run_worker(spec: dict[str, Any], result_path: str) -> int:
    """Inside a worker process: runs `spec["task"]` and writes its result (or the
    error) as JSON to `result_path`."""
    try:
        result = WORKERS[spec["task"]](spec)
        code = 0
    except Exception as e:  # recorded, not raised: the parent carries on
        result = {
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
        code = 1
    with open(result_path, "w") as f:
        json.dump(result, f)
    return code


# === The parent: machine facts, one process per measurement, the report. ===


def spawn(spec: dict[str, Any], timeout: float, work: str) -> dict[str, Any]:
    """Runs one worker in a fresh process (its own session, so a timeout kills its
    helpers too, e.g. inductor's compile workers). Never raises: a failure comes
    back as {"error": ...} with the tail of the process's stderr."""
    fd, result_path = tempfile.mkstemp(suffix=".json", dir=work)
    os.close(fd)
    env = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        # Benchmark this checkout, whatever is installed.
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
    )
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    command += ["--result", result_path]
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # On a timeout, and when this process is stopped (Ctrl-C, SIGTERM) while
        # the worker runs: its group goes too, so nothing is left computing.
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the group we started, by id
    if timed_out:
        _, stderr = process.communicate()
    wall = time.perf_counter() - start
    try:
        with open(result_path) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError):
        result = {}
    finally:
        os.remove(result_path)
    if timed_out:
        result = {"error": f"timed out after {timeout:.0f} s"}
    elif not result:
        result = {"error": f"worker exited with code {process.returncode}"}
    if "error" in result:
        result["stderr_tail"] = (stderr or "")[-3000:]
    result["process_wall_s"] = wall
    return result


def peaks(tensorflow: dict[str, Any], torch: dict[str, Any]) -> dict[str, float | None]:
    """The machine's matmul peak per dtype, GFLOP/s: the better framework's best."""
    out: dict[str, float | None] = {}
    for dtype in ("float32", "bfloat16"):
        values = [r[dtype]["gflops_best"] for r in (tensorflow, torch) if dtype in r]
        out[dtype] = max(values) if values else None
    return out


def add_mfu(measurement: dict[str, Any], flops: float, peak: dict[str, Any]) -> None:
    """MFU against the float32 and the bfloat16 peak, in place."""
    if "tokens_per_second" not in measurement:
        return
    achieved = measurement["tokens_per_second"] * flops
    measurement["model_gflops_per_second"] = achieved / 1e9
    for dtype, key in (
        ("float32", "mfu_vs_fp32_peak"),
        ("bfloat16", "mfu_vs_bf16_peak"),
    ):
        if peak.get(dtype):
            measurement[key] = achieved / (peak[dtype] * 1e9)


def merge(repeats: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """One measurement from a setting's repeats: the median over every measured
    step of every repeat; each repeat's own throughput is kept."""
    good = [r for r in repeats if "error" not in r]
    if not good:
        return dict(repeats[-1])
    steps = [s for r in good for s in r["step_seconds"]]
    merged = dict(good[-1])
    merged.update(
        step_ms_median=statistics.median(steps) * 1e3,
        step_ms_mean=statistics.fmean(steps) * 1e3,
        step_ms_min=min(steps) * 1e3,
        step_ms_max=max(steps) * 1e3,
        tokens_per_second=BATCH * SEQ_LEN / statistics.median(steps),
        steps_measured=len(steps),
        repeats_ok=len(good),
        repeats_failed=len(repeats) - len(good),
        tokens_per_second_by_repeat=[r["tokens_per_second"] for r in good],
    )
    if len(good) < len(repeats):
        merged["errors"] = [r["error"] for r in repeats if "error" in r]
    return merged


def markdown(report: dict[str, Any]) -> str:
    """The measurements as a markdown table, then the ratios."""
    lines = [
        "| framework | size | precision | xla/compile | tokens/s | step ms | "
        "MFU fp32 | MFU bf16 | |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for m in report["measurements"]:
        tags = []
        if m.get("best"):
            tags.append("**best**")
        if m.get("ours_default"):
            tags.append("default")
        compiled = "on" if m["compiled"] else "off"
        if "tokens_per_second" not in m:
            error = m.get("error", "failed").splitlines()[0][:80]
            state = "skipped" if m.get("skipped") else "failed"
            lines.append(
                f"| {m['framework']} | {m['size']} | {m['precision']} | {compiled} "
                f"| {state} | | | | {error} |"
            )
            continue

        def pct(key: str, m: dict[str, Any] = m) -> str:
            return f"{100 * m[key]:.1f}%" if key in m else "n/a"

        lines.append(
            f"| {m['framework']} | {m['size']} | {m['precision']} | {compiled} | "
            f"{m['tokens_per_second']:,.0f} | {m['step_ms_median']:,.0f} | "
            f"{pct('mfu_vs_fp32_peak')} | {pct('mfu_vs_bf16_peak')} | "
            f"{' '.join(tags)} |"
        )
    lines.append("")
    for size, ratios in report["ratios"].items():
        for name, value in ratios.items():
            shown = f"{value:.2f}x" if value is not None else "n/a"
            lines.append(f"- {size}: {name} = {shown}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with the hidden --worker, one measurement)."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="mini only, few steps: checks that everything runs",
    )
    parser.add_argument("--sizes", default=None, help="comma list of mini,small")
    parser.add_argument(
        "--frameworks",
        default=",".join(FRAMEWORKS),
        help="comma list of ours,keras_hub,pytorch",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma list of label parts: run only the settings whose label (e.g. "
        "ours/float32/xla=on) contains one of them",
    )
    parser.add_argument("--out", default=None, help="JSON report path")
    parser.add_argument("--corpus", default=SOTU)
    parser.add_argument(
        "--vocab", default=None, help="default: learned once from the corpus"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=20,
        help="distinct batches held in memory and repeated",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per setting (default 30, quick 4)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed first steps (default 3, quick 1)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="times the whole grid runs, interleaved"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per setting (default 1200, quick 300)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # inside one measurement's own process
        return run_worker(json.loads(args.worker), args.result)
    # SIGTERM (a runner's timeout, `timeout`) ends this process through Python's
    # exit path, so `spawn` can stop the worker it waits on instead of orphaning it.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit) if main_thread else None
    try:
        return benchmark(args, parser)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _exit(signum: int, frame: Any) -> None:
    """A SIGTERM handler: exits as a SIGTERM would, unwinding `finally` blocks."""
    raise SystemExit(128 + signum)


def benchmark(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The whole benchmark for parsed `args`: data, peaks, the grid, the report."""
    sizes = (args.sizes or ("mini" if args.quick else "mini,small")).split(",")
    frameworks = args.frameworks.split(",")
    for name, chosen, known in (
        ("size", sizes, SIZES),
        ("framework", frameworks, FRAMEWORKS),
    ):
        unknown = [c for c in chosen if c not in known]
        if unknown:
            parser.error(f"unknown {name}(s) {', '.join(unknown)}")
    steps = args.steps or (4 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    timeout = args.timeout or (300.0 if args.quick else 1200.0)
    out = args.out or os.path.join(
        HERE,
        "results",
        "pretrain_throughput_quick.json" if args.quick else "pretrain_throughput.json",
    )
    require(args.corpus)
    args.vocab = require(args.vocab) if args.vocab else common.vocabulary(args.corpus)

    report: dict[str, Any] = {
        "benchmark": "pretrain_throughput",
        "quick": args.quick,
        "machine": machine(),
        "settings": {
            "seq_len": SEQ_LEN,
            "batch": BATCH,
            "max_predictions": PREDICTIONS,
            "tokens_per_step": BATCH * SEQ_LEN,
            "distinct_batches": args.batches,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "repeats": args.repeats,
            "timeout_s": timeout,
            "only": args.only,
            "torch_threads": args.threads,
            "corpus": args.corpus,
            "vocab": args.vocab,
            "sizes": {s: SIZES[s] for s in sizes},
        },
        "flops_formula": (
            "flops_per_token = 6*L*(4*D*D + 2*D*I) + 12*L*T*D + 6*(D*D + D*V)*P/T; "
            "MFU = tokens_per_second * flops_per_token / peak_flops"
        ),
        "notes": NOTES,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kbl-throughput-") as work:
        print("making batches from the corpus ...", flush=True)
        data_path = os.path.join(work, "batches.npz")
        data = spawn(
            {
                "task": "data",
                "corpus": args.corpus,
                "vocab": args.vocab,
                "batches": args.batches,
                "path": data_path,
            },
            timeout,
            work,
        )
        report["data"] = data
        if "error" in data:
            print(f"could not make batches: {data['error']}\n{data.get('stderr_tail')}")
            return 1
        vocabulary = data["vocabulary_size"]

        print("measuring the matmul peak ...", flush=True)
        reps = 5 if args.quick else 15
        peak_tf = spawn({"task": "peak_tensorflow", "reps": reps}, timeout, work)
        flags = set(report["machine"].get("flags", []))
        peak_torch = spawn(
            {
                "task": "peak_torch",
                "reps": reps,
                "threads": args.threads,
                "bf16_units": bool(BF16_UNITS & flags),
            },
            timeout,
            work,
        )
        peak = peaks(peak_tf, peak_torch)
        report["machine"]["matmul"] = {
            "n": MATMUL_N,
            "tensorflow": peak_tf,
            "torch": peak_torch,
            "peak_gflops": peak,
        }
        print(f"  peak GFLOP/s: {json.dumps(peak)}", flush=True)

        settings = grid(frameworks)
        if args.only:
            parts = args.only.split(",")
            settings = [s for s in settings if any(p in s.label for p in parts)]
        runs: dict[tuple[str, Setting], list[dict[str, Any]]] = {}
        for repeat in range(args.repeats):
            for size in sizes:
                for setting in settings:
                    reason = skipped(size, setting, report["machine"])
                    if reason:
                        runs.setdefault((size, setting), []).append(
                            {"error": f"skipped: {reason}", "skipped": True}
                        )
                        continue
                    print(
                        f"[{repeat + 1}/{args.repeats}] {size} {setting.label} ...",
                        end=" ",
                        flush=True,
                    )
                    spec = {
                        "task": "torch" if setting.framework == "pytorch" else "keras",
                        "framework": setting.framework,
                        "size": size,
                        "precision": setting.precision,
                        "compiled": setting.compiled,
                        "vocabulary_size": vocabulary,
                        "data": data_path,
                        "steps": steps,
                        "warmup": warmup,
                        "threads": args.threads,
                    }
                    result = spawn(spec, timeout, work)
                    runs.setdefault((size, setting), []).append(result)
                    if "error" in result:
                        print(f"FAILED: {result['error'].splitlines()[0][:200]}")
                    else:
                        print(
                            f"{result['tokens_per_second']:,.0f} tokens/s "
                            f"(first step {result['first_step_s']:.1f} s)",
                            flush=True,
                        )

    report["machine"]["loadavg_at_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - started
    default = data["ours_default"]
    measurements = []
    flops = {size: flops_per_token(SIZES[size], vocabulary) for size in sizes}
    report["flops_per_token"] = flops
    for (size, setting), repeats in runs.items():
        m = {"size": size, **dataclasses.asdict(setting), "label": setting.label}
        m.update(merge(repeats, warmup))
        m.pop("step_seconds", None)
        m["ours_default"] = (
            setting.framework == "ours"
            and setting.precision == default["precision"]
            and setting.compiled == default["xla"]
        )
        add_mfu(m, flops[size]["total"], peak)
        measurements.append(m)
    best: dict[str, dict[str, Any]] = {}
    for m in measurements:
        if "tokens_per_second" not in m:
            continue
        held = best.setdefault(m["size"], {}).get(m["framework"])
        if held is None or m["tokens_per_second"] > held["tokens_per_second"]:
            best[m["size"]][m["framework"]] = m
    for m in measurements:
        m["best"] = best.get(m["size"], {}).get(m["framework"]) is m
    report["measurements"] = measurements
    report["best"] = {
        size: {
            fw: {
                k: m.get(k)
                for k in (
                    "label",
                    "tokens_per_second",
                    "step_ms_median",
                    "mfu_vs_fp32_peak",
                    "mfu_vs_bf16_peak",
                )
            }
            for fw, m in by_framework.items()
        }
        for size, by_framework in best.items()
    }

    def ratio(size: str, a: str, b: str, a_key: str = "best") -> float | None:
        by = best.get(size, {})
        if a_key == "default":
            mine = next(
                (
                    m
                    for m in measurements
                    if m["size"] == size
                    and m["ours_default"]
                    and "tokens_per_second" in m
                ),
                None,
            )
        else:
            mine = by.get(a)
        if mine is None or b not in by:
            return None
        return mine["tokens_per_second"] / by[b]["tokens_per_second"]

    report["ratios"] = {
        size: {
            "ours_best / keras_hub_best": ratio(size, "ours", "keras_hub"),
            "ours_best / pytorch_best": ratio(size, "ours", "pytorch"),
            "ours_default / keras_hub_best": ratio(
                size, "ours", "keras_hub", "default"
            ),
            "ours_default / pytorch_best": ratio(size, "ours", "pytorch", "default"),
        }
        for size in sizes
    }
    report["ours_default_setting"] = default
    common.publish(out, report, markdown(report))
    print(f"({report['wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
