"""The scripts behind the README's fine-tuning table (examples/): the seed statistics
against a hand computation, the checks that keep rows of different samples or
settings apart, and (slow) the table itself end to end on a slice of the data."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared_file

EXAMPLES = os.path.join(REPO, "examples")


@pytest.fixture(scope="module")
def finetune_table():
    sys.path.insert(0, EXAMPLES)
    try:
        import finetune_table

        yield finetune_table
    finally:
        sys.path.remove(EXAMPLES)


def _spread(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "seed_spread.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def _table(directory, pretrained, random, baseline) -> str:
    """A table directory with sentiment-en rows (dev accuracy = macro-F1)."""
    os.makedirs(directory, exist_ok=True)
    rows = {"pretrained": pretrained, "random": random, "baseline": baseline}
    results = {
        "sentiment-en": {
            row: {"dev": {"accuracy": value, "macro_f1": value}}
            for row, value in rows.items()
        }
    }
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(results, f)
    return str(directory)


def test_seed_spread_against_a_hand_computation(tmp_path):
    """Differences of 1, 2 and 4 points: mean 7/3, variance 7/3, so t^2 = 7 with 2
    degrees of freedom, where the two-sided p is 1 - t / sqrt(t^2 + 2)."""
    tables = [
        _table(tmp_path / f"s{i}", p, r, b)
        for i, (p, r, b) in enumerate(
            [(0.70, 0.69, 0.76), (0.72, 0.70, 0.77), (0.75, 0.71, 0.78)]
        )
    ]
    done = _spread(*tables)
    assert done.returncode == 0, done.stderr
    p = 1 - math.sqrt(7) / 3  # 0.118
    row = (
        f"| sentiment-en | acc | 3 | 72.3 ± 2.5 | 70.0 ± 1.0 | 2.3 ± 1.5 | {p:.3f} "
        "| 77.0 ± 1.0 | 70.0/69.0, 72.0/70.0, 75.0/71.0 |"
    )
    assert row in done.stdout.splitlines()


def test_seed_spread_takes_random_rows_of_the_same_samples_only(tmp_path):
    bases = (0.76, 0.77)  # each seed's baseline
    tables = [_table(tmp_path / f"a{i}", 0.74, 0.70, b) for i, b in enumerate(bases)]
    others = [_table(tmp_path / f"b{i}", 0.60, 0.73, b) for i, b in enumerate(bases)]
    done = _spread(*tables, "--random", *others)
    assert done.returncode == 0, done.stderr
    assert "| 74.0 ± 0.0 | 73.0 ± 0.0 | 1.0 ± 0.0 |" in done.stdout
    # The same directories in another order: each seed's sample has its own baseline.
    for option in ("--random", "--against"):
        done = _spread(*tables, option, *others[::-1])
        assert done.returncode == 2
        assert (
            f"{option} {others[1]}: its sentiment-en baseline differs from that of "
            f"{tables[0]}, so its rows were trained on another sample"
        ) in done.stderr
    done = _spread(*tables, "--against", others[0])
    assert done.returncode == 2
    assert "--against: give one directory per DIR, in the same order (2 and 1" in (
        done.stderr
    )


def _finished_row(finetune_table, tmp_path, seed=0):
    """A finished pretrained row as finetune_table.py leaves it, on small files."""
    train, dev, run = tmp_path / "train.jsonl", tmp_path / "dev.jsonl", tmp_path / "pt"
    train.write_text('{"text": "good", "label": "pos"}\n')
    dev.write_text('{"text": "bad", "label": "neg"}\n')
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"hidden_dim": 256}}))
    (run / "model.weights.h5").write_bytes(b"weights")
    out = tmp_path / "table" / "sentiment-en-pretrained"
    out.mkdir(parents=True)
    inputs = {"train_file": str(train), "dev_file": str(dev), "init": str(run)}
    args = _args(seed=seed)
    settings = finetune_table.row_settings(args, "classify", str(run))
    config = {
        "train_file": str(train),
        "dev_file": str(dev),
        "init": str(run),
        "max_train": 5000,
        "train": {"seed": seed, "learning_rate": 1e-4, "layer_decay": 1.0},
        "task_options": {"pooling": "cls"},
    }
    (out / "config.json").write_text(json.dumps(config))
    (out / "metrics.json").write_text("{}")
    recorded = {**finetune_table.digests(inputs), "settings": settings}
    (out / finetune_table.INPUTS).write_text(json.dumps(recorded))
    return str(out), inputs


def _args(**given):
    from types import SimpleNamespace

    options = dict(
        max_train=5000,
        seed=0,
        backbone_dropout=0.1,
        precision="float32",
        epochs=None,
        learning_rate=None,
        layer_decay=1.0,
        pooling="cls",
    )
    return SimpleNamespace(**{**options, **given})


def test_a_finished_row_is_reused_only_as_it_ran(finetune_table, tmp_path):
    out, inputs = _finished_row(finetune_table, tmp_path)
    stale = finetune_table.stale
    settings = finetune_table.row_settings(_args(), "classify", inputs["init"])
    assert settings["learning_rate"] == 1e-4  # kbl's default for 256 hidden units
    assert stale(out, "classify", inputs, settings) is None
    for option, value, message in (
        ("seed", 1, "it ran with --seed 0, not 1"),
        ("pooling", "mean", "it ran with --pooling cls, not mean"),
        ("learning_rate", 4e-4, "it ran with --learning-rate 0.0001, not 0.0004"),
        ("layer_decay", 0.8, "it ran with --layer-decay 1.0, not 0.8"),
        ("epochs", 8, "it ran with --epochs (not given), not 8"),
    ):
        settings = finetune_table.row_settings(
            _args(**{option: value}), "classify", inputs["init"]
        )
        assert stale(out, "classify", inputs, settings) == message
    settings = finetune_table.row_settings(_args(), "classify", inputs["init"])
    with open(inputs["init"] + "/model.weights.h5", "ab") as f:
        f.write(b" trained further")
    assert stale(out, "classify", inputs, settings) == (
        f"{inputs['init']} has changed since it ran"
    )


def test_a_row_from_before_the_recorded_settings_reads_its_config(
    finetune_table, tmp_path
):
    """Rows finished before table_inputs.json: settings from config.json, pooling
    "cls" when it names none, and weights newer than the row mean a changed run."""
    out, inputs = _finished_row(finetune_table, tmp_path, seed=2)
    os.remove(os.path.join(out, finetune_table.INPUTS))
    config_path = os.path.join(out, "config.json")
    config = json.load(open(config_path))
    del config["task_options"]["pooling"], config["train"]["layer_decay"]
    json.dump(config, open(config_path, "w"))
    settings = finetune_table.row_settings(_args(seed=2), "classify", inputs["init"])
    weights = os.path.join(inputs["init"], "model.weights.h5")
    finished = os.path.getmtime(os.path.join(out, "metrics.json"))
    os.utime(weights, (finished - 60, finished - 60))
    assert finetune_table.stale(out, "classify", inputs, settings) is None
    os.utime(weights, (finished + 60, finished + 60))
    assert finetune_table.stale(out, "classify", inputs, settings) == (
        f"{weights} was written after it finished"
    )


def test_word_in_context_pairs_name_their_word(finetune_table):
    record = {"lemma": "bank", "text_a": "He sat on the bank.", "text_b": "A bank."}
    assert finetune_table.with_target_word({**record, "label": "F"}) == {
        "text_a": "bank : He sat on the bank.",
        "text_b": "bank : A bank.",
        "label": "F",
    }
    assert finetune_table.without_options(
        ["--seq-len", "64", "--epochs", "8", "--patience", "3"],
        "--epochs",
        "--patience",
    ) == ["--seq-len", "64"]


@pytest.mark.slow
def test_the_table_runs_end_to_end_and_picks_up_where_it_stopped(tmp_path):
    """A tiny pretrained run, then the table's sentiment-en rows on a slice of the
    data: both rows and the baseline are written, a second call reuses them without
    training, and a call with another seed into the same directory is refused."""
    corpus = tmp_path / "corpus.txt"
    with gzip.open(shared_file("pretrain", "en", "sotu.txt.gz"), "rt") as f:
        corpus.write_text("".join(itertools.islice(f, 3000)))
    data = tmp_path / "data" / "cls" / "en"
    data.mkdir(parents=True)
    for split, n in (("train", 300), ("dev", 100)):
        source = shared_file("cls", "en", f"movie_snippets.{split}.jsonl")
        with open(source) as f:
            (data / f"movie_snippets.{split}.jsonl").write_text(
                "".join(itertools.islice(f, n))
            )
    kbl = [sys.executable, "-m", "keras_bert_lite"]

    def run(*command, check=True):
        return subprocess.run(
            command, capture_output=True, text=True, cwd=tmp_path, check=check
        )

    run(*kbl, "pretrain", "--corpus", str(corpus), "--out", "pt", "--model", "tiny",
        "--vocab-size", "1000", "--seq-len", "32", "--steps", "20",
        "--precision", "float32")  # fmt: skip
    table = [sys.executable, os.path.join(EXAMPLES, "finetune_table.py"),
             "--en", "pt", "--zh", "none", "--data", "data", "--out", "table",
             "--only", "sentiment-en", "--max-train", "200", "--epochs", "1",
             "--precision", "float32"]  # fmt: skip
    first = run(*table)
    assert first.stdout.count("$ kbl finetune") == 2
    results = json.loads((tmp_path / "table" / "results.json").read_text())
    rows = results["sentiment-en"]
    assert set(rows) == {"pretrained", "random", "baseline"}
    for row in rows.values():
        assert 0 <= row["dev"]["accuracy"] <= 1
    again = run(*table)
    assert "$ kbl" not in again.stdout
    rows_again = json.loads((tmp_path / "table" / "results.json").read_text())[
        "sentiment-en"
    ]
    for row in ("pretrained", "random"):  # (the baseline is fitted again, in ms)
        assert rows_again[row] == rows[row]
    assert rows_again["baseline"]["dev"] == rows["baseline"]["dev"]
    refused = run(*table, "--seed", "1", check=False)
    assert refused.returncode == 1
    assert (
        "table/sentiment-en-pretrained: it ran with --seed 0, not 1; delete that "
        "directory to run it again"
    ) in refused.stderr
