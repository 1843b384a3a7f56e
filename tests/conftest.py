"""Shared fixtures: one helper per kind of object, tiny configs."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get(
    "KBL_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data")
)
SOTU = os.path.join(SHARED_DATA, "pretrain", "en", "sotu.txt.gz")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; run with `pytest -m slow`")


def shared_file(*parts: str) -> str:
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (../shared/data sits beside the checkout)")
    return path


@pytest.fixture(scope="session")
def sotu_subset(tmp_path_factory) -> str:
    """The first 60 State of the Union addresses (~1/4 of the corpus, >400k tokens)."""
    source = shared_file("pretrain", "en", "sotu.txt.gz")
    path = tmp_path_factory.mktemp("corpus") / "sotu60.txt"
    with gzip.open(source, "rt", encoding="utf-8") as f, open(path, "w") as out:
        blanks = 0
        for line in f:
            blanks += not line.strip()
            if blanks >= 60:
                break
            out.write(line)
    return str(path)


@pytest.fixture(scope="session")
def sotu_tokenizer(sotu_subset, tmp_path_factory):
    """A 2,000-token vocabulary learned from a slice of the subset."""
    from keras_bert_lite.data import read_documents
    from keras_bert_lite.text import BertTokenizer, learn_vocabulary

    sentences = (s for doc in read_documents(sotu_subset) for s in doc)
    vocab = learn_vocabulary(itertools.islice(sentences, 3000), 2000)
    return BertTokenizer(vocab)


class Stopped(Exception):
    """What `stopped_after_epoch` raises: the run as a crash leaves it."""


@contextlib.contextmanager
def stopped_after_epoch(epoch: int):
    """Inside it, a run stops (raises `Stopped`, which the block expects) right
    after writing the checkpoint of `epoch` (0-based), as a run killed then would."""
    from keras_bert_lite.training import callbacks

    original = callbacks.RunCheckpoint.on_epoch_end

    def stop(self, done, logs=None):
        original(self, done, logs)
        if done == epoch:
            raise Stopped

    with pytest.MonkeyPatch.context() as m:
        m.setattr(callbacks.RunCheckpoint, "on_epoch_end", stop)
        with pytest.raises(Stopped):
            yield


def tiny_vocabulary() -> list[str]:
    from keras_bert_lite.text import SPECIAL_TOKENS

    words = (
        "the a of to and in is was it that he she they we you un ##aff ##able "
        "hello world , . ! ? 中 国 人 ##s ##ing ##ed run walk cat dog"
    ).split()
    return list(SPECIAL_TOKENS) + words


_EXIT_STATUS = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)


def pytest_unconfigure(config):
    """Leave without the interpreter's teardown once pytest has reported.

    With TensorFlow, PyTorch (the checkpoint parity tests) and JAX loaded in one
    process, the native libraries' destructors crashed the interpreter at exit
    (SIGSEGV after "209 passed"), turning a green run red. Results are printed and
    written by now; only the exit status is left to give.
    """
    if "status" in _EXIT_STATUS:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])
