"""Callbacks a run directory needs: resumable checkpoints and an exact step budget."""

from __future__ import annotations

import glob
import os
import time

import keras

from keras_bert_lite.io import atomic_path, read_json, write_json


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch writes `checkpoints/ckpt-<step>.weights.h5` (model and
    optimizer state), then `checkpoints/state.json` naming it; keeps the newest `keep`.

    The state file is written last and atomically, so it always names a complete
    checkpoint: a crash while saving leaves the previous one in charge.
    """

    def __init__(self, directory: str, keep: int = 2):
        super().__init__()
        self.directory = directory
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        name = f"ckpt-{step:09d}.weights.h5"
        path = os.path.join(self.directory, name)
        with atomic_path(path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        write_json(
            os.path.join(self.directory, "state.json"),
            {"checkpoint": name, "epoch": epoch + 1, "step": step},
        )
        checkpoints = sorted(
            glob.glob(os.path.join(self.directory, "ckpt-*.weights.h5"))
        )
        for old in checkpoints[: -self.keep]:
            os.remove(old)


def latest_checkpoint(directory: str) -> tuple[str, dict] | None:
    """(path, state) of the checkpoint that `state.json` names, or None."""
    state_path = os.path.join(directory, "state.json")
    if not os.path.exists(state_path):
        return None
    state = read_json(state_path)
    return os.path.join(directory, os.path.basename(state["checkpoint"])), state


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

    def tokens_per_second(self) -> float:
        if not self.times:
            return 0.0
        return self.tokens_per_step / sorted(self.times)[len(self.times) // 2]
