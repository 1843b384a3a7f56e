"""SIGKILL at random moments, then `--resume`: the run finishes with the right number
of steps, the loss goes on from where it was, and the run directory is whole after
every kill. Slow (a few minutes): `pytest -m slow tests/test_crash_resume.py`."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, tiny_vocabulary
from tests.test_reliability import _classify_records, _corpus_text, _jsonl

KILLS = 10


def _start(args, log):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "keras_bert_lite", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _state_step(run) -> int:
    try:
        return json.loads((run / "checkpoints" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def _check_whole(run) -> list[dict]:
    """Every file of the run parses; returns the history rows."""
    import keras_bert_lite as kbl
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.training.callbacks import latest_checkpoint

    if not (run / "config.json").exists():
        return []
    run_dir.read_config(str(run))
    run_dir.load_tokenizer(str(run))
    found = latest_checkpoint(str(run / "checkpoints"))
    if found:
        import h5py

        with h5py.File(found[0], "r") as f:  # complete: it opens and holds layers
            assert len(f.keys()) > 0
    if (run / "model.weights.h5").exists():
        kbl.load(str(run))
    rows = []
    if (run / "history.csv").exists():
        with open(run / "history.csv") as f:
            rows = list(csv.DictReader(f))
        epochs = [int(r["epoch"]) for r in rows]
        assert epochs == list(range(len(epochs))), epochs
    return rows


def _kill_and_resume(args, resume_args, run, done, tmp_path, seed):
    """Starts the command and SIGKILLs it KILLS times once training has begun (half
    after a random delay, half just after a checkpoint lands, when files are being
    replaced), checks the run after each kill, resumes, and finally lets it finish.
    Returns the number of kills."""
    rng = random.Random(seed)
    kills = 0
    log_path = tmp_path / "log.txt"
    attempt = 0
    while True:
        offset = log_path.stat().st_size if log_path.exists() else 0
        started = (run / "config.json").exists()
        with open(log_path, "ab") as log:
            process = _start(resume_args if started else args, log)
        attempt += 1
        if kills >= KILLS:
            assert process.wait(timeout=600) == 0, log_path.read_text()[-3000:]
            break
        # Training has begun when the command prints its plan.
        deadline = time.time() + 300
        while process.poll() is None and time.time() < deadline:
            with open(log_path, "rb") as f:
                f.seek(offset)
                if re.search(rb"^(pretraining|fine-tuning) ", f.read(), re.M):
                    break
            time.sleep(0.05)
        if attempt % 2:
            deadline = time.time() + rng.uniform(0.0, 4.0)
            while time.time() < deadline and process.poll() is None:
                time.sleep(0.02)
        else:
            before, deadline = _state_step(run), time.time() + 120
            while (
                _state_step(run) == before
                and process.poll() is None
                and time.time() < deadline
            ):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.2))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        elif done():
            break
        else:
            raise AssertionError(log_path.read_text()[-3000:])
        _check_whole(run)
    return kills


@pytest.mark.slow
def test_pretraining_survives_sigkill_and_resumes(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(_corpus_text(60))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocabulary()) + "\n")
    run = tmp_path / "run"
    steps = 120
    args = [
        "pretrain",
        "--corpus",
        str(corpus),
        "--vocab",
        str(vocab),
        "--out",
        str(run),
        "--model",
        "tiny",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--steps",
        str(steps),
        "--eval-every",
        "10",
        "--held-out",
        "0",
        "--xla",
        "off",
    ]
    resume = ["pretrain", "--out", str(run), "--resume"]
    kills = _kill_and_resume(
        args, resume, run, lambda: (run / "metrics.json").exists(), tmp_path, 0
    )
    assert kills >= KILLS
    assert json.loads((run / "metrics.json").read_text())["steps"] == steps
    rows = _check_whole(run)
    assert len(rows) == steps // 10
    losses = [float(r["loss"]) for r in rows]
    # The loss goes on from where it was: never back up to the first epoch's level.
    assert max(losses[len(losses) // 2 :]) < losses[0], losses


@pytest.mark.slow
def test_finetuning_survives_sigkill_and_resumes(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", _classify_records(400))
    dev = _jsonl(tmp_path / "dev.jsonl", _classify_records(40))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tiny_vocabulary()) + "\n")
    run = tmp_path / "run"
    epochs = 12
    args = [
        "finetune",
        "--task",
        "classify",
        "--train",
        train,
        "--dev",
        dev,
        "--init",
        "random",
        "--vocab",
        str(vocab),
        "--model",
        "tiny",
        "--seq-len",
        "16",
        "--batch-size",
        "8",
        "--epochs",
        str(epochs),
        "--patience",
        str(epochs),
        "--learning-rate",
        "1e-3",
        "--out",
        str(run),
    ]
    kills = _kill_and_resume(
        args,
        args + ["--resume"],
        run,
        lambda: (run / "metrics.json").exists(),
        tmp_path,
        1,
    )
    assert kills >= KILLS
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == epochs
    rows = _check_whole(run)
    assert len(rows) == epochs
    assert _state_step(run) == epochs * 50  # 400 records / batch 8, every epoch
    losses = [float(r["loss"]) for r in rows]
    assert max(losses[len(losses) // 2 :]) < losses[0], losses
    # Ten kills later the weights are exactly those of the run never stopped.
    whole = tmp_path / "whole"
    with open(tmp_path / "whole.txt", "wb") as log:
        never_stopped = _start([*args[:-1], str(whole)], log)
    assert never_stopped.wait(timeout=600) == 0
    from tests.test_finetune import _weights

    for name in ("model.weights.h5", f"checkpoints/ckpt-{epochs * 50:09d}.weights.h5"):
        mine, theirs = _weights(run / name), _weights(whole / name)
        assert mine.keys() == theirs.keys()
        assert all(np.array_equal(mine[k], theirs[k]) for k in mine), name
