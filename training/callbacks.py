"""Callbacks a run directory needs: resumable checkpoints, an exact step budget, and
curves for TensorBoard."""

from __future__ import annotations

import csv
import glob
import math
import os
import time
from collections.abc import Callable

import keras
import numpy as np

from keras_bert_lite.errors import KblError
from keras_bert_lite.io import atomic_path, disk_full, read_json, write_json


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch writes `checkpoints/ckpt-<step>.weights.h5` (model and
    optimizer state), then `checkpoints/state.json` naming it (and holding the dropout
    seed-generator states, which the weights file leaves out); keeps the newest `keep`.

    The state file is written last and atomically, so it always names a complete
    checkpoint: a crash (or a full disk) while saving leaves the previous one in
    charge. `state` adds fields to state.json (a fine-tuning run's best score).
    state.json's `seconds` is the run's wall time so far: `seconds_before` (what the
    checkpoint this call resumed from recorded) plus the time since `started`.
    """

    def __init__(
        self,
        directory: str,
        keep: int = 2,
        state: Callable[[], dict] | None = None,
        started: float | None = None,
        seconds_before: float = 0.0,
    ):
        super().__init__()
        self.directory = directory
        self.keep = keep
        self.state = state
        self.started = time.time() if started is None else started
        self.seconds_before = seconds_before

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        name = f"ckpt-{step:09d}.weights.h5"
        path = os.path.join(self.directory, name)
        state = {
            "checkpoint": name,
            "epoch": epoch + 1,
            "step": step,
            "seconds": round(self.seconds_before + time.time() - self.started, 1),
        }
        if self.state is not None:
            state.update(self.state())
        state["seed_states"] = seed_states(self.model)
        try:
            with atomic_path(path, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
            write_json(os.path.join(self.directory, "state.json"), state)
        except (OSError, KblError) as e:
            if isinstance(e, OSError) and not disk_full(e):
                raise
            found = latest_checkpoint(self.directory)
            previous = (
                f"the previous checkpoint ({found[0]}, step {found[1]['step']}) "
                "is intact"
                if found
                else "no earlier checkpoint exists"
            )
            raise KblError(
                f"{path}: no space left on the device for the checkpoint at step "
                f"{step}; {previous}: free some space and continue with --resume"
            ) from None
        checkpoints = sorted(
            glob.glob(os.path.join(self.directory, "ckpt-*.weights.h5"))
        )
        for old in checkpoints[: -self.keep]:
            os.remove(old)


NO_SEED_STATES = (
    "note: the checkpoint holds no dropout seed states (written by an older "
    "version); training goes on with fresh dropout masks"
)


def _seed_variables(model) -> list:
    # Each dropout layer's keras.random.SeedGenerator holds a [seed, counter] state
    # variable, advanced once per training step. A .weights.h5 file leaves them out.
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def seed_states(model) -> list[list[int]]:
    """The model's dropout seed-generator states, in `model.variables` order."""
    return [np.asarray(v).tolist() for v in _seed_variables(model)]


def restore_seed_states(model, saved: list[list[int]] | None) -> bool:
    """Puts back what `seed_states` recorded, so that a resumed run draws the same
    dropout masks as one never stopped. False where there is nothing that fits (a
    checkpoint from before the states were recorded, or another model). True for a
    model without dropout: it draws no masks, so there is nothing to put back."""
    variables = _seed_variables(model)
    if not variables:
        return True
    if not saved or len(saved) != len(variables):
        return False
    for variable, value in zip(variables, saved, strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return True


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops the run at the first step whose loss is NaN or infinite, naming it.

    It raises from the batch hook, before the epoch's checkpoint and best-weights
    callbacks run, so the last good checkpoint stays the one state.json names.
    """

    def __init__(self, checkpoint_dir: str | None = None):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(np.asarray(loss))
        if math.isfinite(loss):
            return
        step = int(self.model.optimizer.iterations.numpy())
        found = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        kept = (
            f"the last good checkpoint ({found[0]}, step {found[1]['step']}) is kept"
            if found
            else "no checkpoint was written before it"
        )
        raise KblError(
            f"step {step}: the training loss is {loss}; training stopped and {kept}; "
            "lower --learning-rate (or check the data) and run again"
            + (" with --resume" if found else "")
        )


class HistoryCSV(keras.callbacks.Callback):
    """`history.csv`, one row per epoch, rewritten atomically after every epoch:
    `epoch`, `step` (the optimizer steps taken by its end: a pretraining run's last
    interval may be shorter than the others) and the epoch's logs.

    A resumed run keeps the rows before its first epoch (`keep_before`) and drops
    any row of an epoch it repeats, so a crash between the history row and the
    checkpoint never leaves a duplicate (or half-written) row.
    """

    def __init__(self, path: str, keep_before: int = 0):
        super().__init__()
        self.path = path
        self.rows: list[dict] = []
        self.keys: list[str] = []
        if keep_before and os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                self.keys = [k for k in fields if k not in _INDEX_COLUMNS]
                self.rows = [r for r in reader if _epoch(r) < keep_before]

    def on_epoch_end(self, epoch, logs=None):
        row: dict = {"epoch": epoch}
        if self.model is not None:
            row["step"] = int(np.asarray(self.model.optimizer.iterations))
        for key, value in sorted((logs or {}).items()):
            row[key] = float(np.asarray(value))
            if key not in self.keys:
                self.keys.append(key)
        self.rows = [r for r in self.rows if _epoch(r) < epoch] + [row]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, [*_INDEX_COLUMNS, *self.keys], restval="")
                writer.writeheader()
                writer.writerows(self.rows)


def attention_entropy(probabilities, padding_mask) -> np.ndarray:
    """(layers, heads): each head's attention entropy, as a fraction of the
    entropy of attending evenly to the sequence's real tokens, averaged over the
    real query tokens. 1 looks everywhere alike; 0 looks at one token only.

    `probabilities`: a list of (B, N, T, T) attention weights, one per layer
    (`BertBackbone.attention_probabilities`); `padding_mask`: (B, T), 1 on real
    tokens.
    """
    mask = np.asarray(padding_mask).astype(bool)
    # log(real tokens) is the most a row can have; a one-token sequence has none.
    uniform = np.log(np.maximum(mask.sum(-1), 2))[:, None, None]  # (B, 1, 1)
    queries = mask[:, None, :]  # (B, 1, T)
    fractions = []
    for layer in probabilities:
        p = np.asarray(layer, dtype=np.float64)
        entropy = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)  # (B, N, T)
        per_query = np.where(queries, entropy / uniform, 0.0)
        fractions.append(per_query.sum((0, 2)) / queries.sum())
    return np.stack(fractions)


class AttentionEntropy(keras.callbacks.Callback):
    """Adds `attention_entropy_min` and `attention_entropy_mean` to every
    epoch's logs (so to history.csv and TensorBoard): `attention_entropy` of the
    model's backbone on one fixed batch.

    A minimum near 0 early in pretraining means a head has collapsed onto one
    token (typically [SEP]); a learning rate too high for the model does that,
    and masked-LM accuracy then stalls at word frequencies (README, Pretraining).
    """

    def __init__(self, inputs: dict):
        super().__init__()
        self.inputs = inputs

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        backbone = self.model.backbone
        fractions = attention_entropy(
            backbone.attention_probabilities(self.inputs), self.inputs["padding_mask"]
        )
        logs["attention_entropy_min"] = float(fractions.min())
        logs["attention_entropy_mean"] = float(fractions.mean())


_INDEX_COLUMNS = ("epoch", "step")  # history.csv's first columns: where, not metrics


def last_history_row(path: str) -> dict[str, float]:
    """The metrics of the last epoch in `history.csv` ({} when there is none)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    last = max(rows, key=_epoch)
    return {k: float(v) for k, v in last.items() if k not in _INDEX_COLUMNS and v}


def _epoch(row: dict) -> int:
    try:
        return int(row.get("epoch", -1))
    except ValueError:
        return -1


def latest_checkpoint(directory: str) -> tuple[str, dict] | None:
    """(path, state) of the checkpoint that `state.json` names, or None."""
    state_path = os.path.join(directory, "state.json")
    if not os.path.exists(state_path):
        return None
    state = read_json(state_path)
    name = state.get("checkpoint") if isinstance(state, dict) else None
    # The name is a file inside `directory`, never a path out of it.
    if (
        not isinstance(name, str)
        or name != os.path.basename(name)
        or not name.endswith(".weights.h5")
        or not isinstance(state.get("epoch"), int)
        or not isinstance(state.get("step"), int)
        or not isinstance(state.get("seconds", 0.0), (int, float))
    ):
        raise KblError(
            f"{state_path}: not a checkpoint state (expected checkpoint: a "
            "ckpt-*.weights.h5 file name in this folder, epoch, step and "
            "optionally seconds, a number)"
        )
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise KblError(f"{state_path}: names {name}, which is missing")
    return path, state


class StopAtStep(keras.callbacks.Callback):
    """Stops training once the optimizer has taken `steps` steps (exact step budgets
    even when they are not a multiple of the evaluation interval)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


class Throughput(keras.callbacks.Callback):
    """Measures training tokens/s from the median step time (the first step of each
    epoch, which may compile or refill the input pipeline, is left out)."""

    def __init__(self, tokens_per_step: int):
        super().__init__()
        self.tokens_per_step = tokens_per_step
        self.times: list[float] = []
        self._last: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now

    def tokens_per_second(self) -> float | None:
        """None when no step was timed (every epoch one step long)."""
        if not self.times:
            return None
        return self.tokens_per_step / sorted(self.times)[len(self.times) // 2]


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback with every epoch's scalars written.

    With an integer `update_freq`, Keras writes the epoch's (and the held-out
    evaluation's) scalars under the recording condition of the last batch, so they
    are kept only when the epoch's step count is a multiple of `update_freq`
    (tensorflow/tensorflow#49109): a pretraining run evaluated every 250 steps, or a
    fine-tuning epoch of 63 steps, had batch curves and no epoch ones.
    """

    def on_epoch_end(self, epoch, logs=None):
        with self.summary.record_if(True):
            super().on_epoch_end(epoch, logs)

    def on_test_end(self, logs=None):
        with self.summary.record_if(True):
            super().on_test_end(logs)
