"""The command line end to end, as a user runs it."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

# A line of TensorFlow's C++ logging: severity letter, MMDD or 0000, a time.
_CPP_LOG = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)


def kbl(*args, cwd=None):
    """kbl in a fresh interpreter, with the environment a user has (no
    TF_CPP_MIN_LOG_LEVEL of ours: the command line sets its own)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-m", "keras_bert_lite", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def refused(capsys, *args) -> str:
    """kbl in this process, for a command refused before it trains (a fresh
    interpreter costs ~7 s of TensorFlow start-up): asserts exit status 2 and
    returns what it printed to stderr. argparse's own refusals count too."""
    from keras_bert_lite import cli

    capsys.readouterr()
    try:
        status = cli.main(list(args))
    except SystemExit as exit:  # argparse refuses a malformed value this way
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2, err
    return err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 short documents of real prose (Python's own documentation topics)."""
    from keras_bert_lite.data.default_data import _prose_documents

    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    docs = _prose_documents()[:40]
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    return str(path)


def test_vocab_says_why_it_is_not_the_size_asked_for(tmp_path, capsys):
    """Every character is kept, so a tiny --size gives more tokens, and a small
    corpus fewer; kbl vocab says which and why (a 16-token request wrote 42 tokens
    without a word)."""
    from keras_bert_lite import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog .\n" * 50)
    vocab = tmp_path / "vocab.txt"
    for size, note in (("16", "more than the 16"), ("5000", "fewer than the 5000")):
        argv = ["vocab", "--corpus", str(corpus), "--size", size, "--out", str(vocab)]
        assert cli.main(argv) == 0
        printed = capsys.readouterr().out
        written = len(vocab.read_text().splitlines())
        assert f"wrote {written} tokens" in printed
        assert note in printed, printed
        assert (written > 16) if size == "16" else (written < 5000)


def test_vocab_then_tiny_pretraining_then_resume(corpus, tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    done = kbl(
        "vocab",
        "--corpus",
        corpus,
        "--size",
        "600",
        "--out",
        str(vocab),
        "--json",
        str(tmp_path / "vocab.json"),
    )
    assert done.returncode == 0, done.stderr
    tokens = vocab.read_text().splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert json.loads((tmp_path / "vocab.json").read_text())["size"] == len(tokens)

    run = tmp_path / "run"
    args = [
        "pretrain",
        "--corpus",
        corpus,
        "--vocab",
        str(vocab),
        "--out",
        str(run),
        "--model",
        "tiny",
        "--seq-len",
        "32",
        "--batch-size",
        "8",
        "--steps",
        "12",
        "--eval-every",
        "4",
        "--held-out",
        "0.2",
        "--eval-batches",
        "2",
        "--warmup",
        "0.25",
        "--dropout",
        "0.05",
    ]
    done = kbl(*args)
    assert done.returncode == 0, done.stderr
    # Only kbl's own lines: none of TensorFlow's C++ logging (on CPUs where oneDNN
    # has no int32 kernels it logged an ERROR line mid-run that was no error).
    assert not _CPP_LOG.search(done.stdout + done.stderr), done.stderr
    # A fifth of 40 documents holds more than two batches: evaluation is capped.
    assert "held-out: 2 batches per evaluation (the --eval-batches cap)" in done.stdout
    for name in (
        "config.json",
        "vocab.txt",
        "model.weights.h5",
        "history.csv",
        "metrics.json",
        "tensorboard",
        "checkpoints/state.json",
    ):
        assert (run / name).exists(), name
    # TensorBoard has each evaluation's scalars, though 4 steps is not a multiple of
    # the batch curves' 100 (Keras wrote epoch scalars only at multiples of it).
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    for split in ("train", "validation"):
        curves = EventAccumulator(str(run / "tensorboard" / split))
        curves.Reload()
        assert len(curves.Tensors("epoch_mlm_loss")) == 3, split
    # Each file as readable as the umask allows, not private as temporary files are.
    umask = os.umask(0)
    os.umask(umask)
    for path in [vocab, *run.rglob("*")]:
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert {
        "mlm_accuracy",
        "nsp_accuracy",
        "mlm_loss",
        "val_mlm_accuracy",
        "val_nsp_accuracy",
    } <= set(rows[0])
    # The attention monitor: each epoch, a fraction of the uniform entropy.
    for row in rows:
        low, mean = (float(row[f"attention_entropy_{k}"]) for k in ("min", "mean"))
        assert 0 < low <= mean <= 1
    finished = json.loads((run / "metrics.json").read_text())
    assert finished["steps"] == 12
    last = float(rows[-1]["val_mlm_accuracy"])
    assert finished["metrics"]["val_mlm_accuracy"] == last
    config = json.loads((run / "config.json").read_text())
    assert (config["train"]["warmup"], config["model"]["dropout"]) == (0.25, 0.05)

    # A second start on the same directory is refused; --resume of a finished run
    # keeps its steps, and its metrics are still the last evaluation's.
    assert "--resume" in refused(capsys, *args)
    resumed = kbl("pretrain", "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "ended at the checkpoint" in resumed.stdout
    again_metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert again_metrics == finished["metrics"]
    # The run's time is carried by its checkpoint into each call that resumes it.
    state_path = run / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    assert 0 < state["seconds"] <= finished["seconds"]
    state_path.write_text(json.dumps({**state, "seconds": 1000.0}))

    # --resume with --steps lengthens it (a new learning rate takes effect from the
    # checkpoint on), recorded in config.json; what fixes the data or the model, or
    # a length the run has passed, is refused and changes nothing.
    longer = kbl(
        "pretrain", "--out", str(run), "--resume", "--steps", "16",
        "--learning-rate", "5e-4",
    )  # fmt: skip
    assert longer.returncode == 0, longer.stderr
    assert "resuming with steps 12 -> 16, learning_rate 0.0003 -> 0.0005" in (
        longer.stdout
    )
    longer_metrics = json.loads((run / "metrics.json").read_text())
    assert longer_metrics["steps"] == 16 and longer_metrics["seconds"] > 1000
    assert json.loads(state_path.read_text())["seconds"] > 1000
    with open(run / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    config = json.loads((run / "config.json").read_text())
    assert config["resumes"] == [
        {"step": 12, "train": {"steps": [12, 16], "learning_rate": [3e-4, 5e-4]}}
    ]

    # BERT's second phase: longer sequences from the checkpoint on, masked slots
    # following; an option given at its default value counts (3e-4 is the default).
    # --until stops at a step of the schedule, which stays 24 steps long.
    phase2 = kbl(
        "pretrain", "--out", str(run), "--resume", "--steps", "24",
        "--seq-len", "64", "--learning-rate", "3e-4", "--until", "20",
    )  # fmt: skip
    assert phase2.returncode == 0, phase2.stderr
    for said in ("seq_len 32 -> 64", "max_predictions 5 -> 10", "0.0005 -> 0.0003"):
        assert said in phase2.stdout, phase2.stdout
    assert "24 steps of 8 x 64 tokens" in phase2.stdout
    assert "stopping at step 20 (until)" in phase2.stdout
    assert json.loads((run / "metrics.json").read_text())["steps"] == 20
    config = json.loads((run / "config.json").read_text())
    assert (config["data"]["seq_len"], config["data"]["max_predictions"]) == (64, 10)
    assert (config["train"]["learning_rate"], config["train"]["steps"]) == (3e-4, 24)
    assert config["resumes"][-1] == {
        "step": 16,
        "train": {"steps": [16, 24], "learning_rate": [5e-4, 3e-4]},
        "data": {"seq_len": [32, 64], "max_predictions": [5, 10]},
    }
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    # Each row says the step it was logged at, across resumes and phases.
    assert [(r["epoch"], r["step"]) for r in rows] == [
        ("0", "4"),
        ("1", "8"),
        ("2", "12"),
        ("3", "16"),
        ("4", "20"),
    ]
    for extra, says in (
        (["--until", "22"], "a multiple of the evaluation interval, 4"),
        (["--until", "16"], "from the run's step 20 to the end of its schedule, 24"),
        (["--seq-len", "1024"], "longer than the model's max_sequence_length 512"),
        (["--whole-word-mask"], "started with whole_word_mask=False"),
        (["--dropout", "0.2"], "started with dropout=0.05"),
        (["--steps", "8"], "the run is at step 20"),
        (["--vocab", str(vocab)], "--vocab with --resume"),
    ):
        assert says in refused(
            capsys, "pretrain", "--out", str(run), "--resume", *extra
        )
    assert json.loads((run / "config.json").read_text()) == config

    import keras_bert_lite as kbl_api

    model = kbl_api.load(str(run))
    tokenizer = kbl_api.load_tokenizer(str(run))
    assert model.backbone.vocabulary_size == tokenizer.vocabulary_size == len(tokens)


def test_pretraining_goes_on_from_another_run(corpus, tmp_path, capsys):
    """--init: a run on new text starts from another run's vocabulary, model and
    weights (domain-adaptive pretraining), heads included."""
    import numpy as np

    import keras_bert_lite as kbl_api
    from keras_bert_lite.data.default_data import _prose_documents

    common = ["--seq-len", "32", "--batch-size", "8", "--steps", "4"]
    common += ["--eval-every", "4", "--held-out", "0.2", "--eval-batches", "1"]
    base, adapted = tmp_path / "base", tmp_path / "adapted"
    done = kbl(
        "pretrain", "--corpus", corpus, "--out", str(base), "--model", "tiny",
        "--vocab-size", "600", *common,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Other documents, one JSON line each, none of them in the first run's text.
    reviews = tmp_path / "new.jsonl"
    docs = _prose_documents()[40:80]
    reviews.write_text("".join(json.dumps({"text": " ".join(d)}) + "\n" for d in docs))
    start = ["pretrain", "--init", str(base), "--corpus", str(reviews)]

    # What the first run fixes cannot be given again.
    for extra in (["--model", "mini"], ["--vocab-size", "700"]):
        said = refused(capsys, *start, "--out", str(tmp_path / "no"), *extra, *common)
        assert "keeps its vocabulary" in said
        assert not (tmp_path / "no").exists()

    # A learning rate so small that four steps move no weight by 1e-6: the run
    # ends where it began, on the first run's weights (random ones are 0.02 off).
    done = kbl(
        *start, "--out", str(adapted), "--no-nsp", "--learning-rate", "1e-9",
        *common,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"starting from the weights of {base}" in done.stdout
    assert (adapted / "vocab.txt").read_text() == (base / "vocab.txt").read_text()
    configs = [json.loads((r / "config.json").read_text()) for r in (base, adapted)]
    assert configs[0]["model"] == configs[1]["model"]
    assert configs[1]["init"] == str(base) and not configs[1]["data"]["nsp"]
    before, after = kbl_api.load(str(base)), kbl_api.load(str(adapted))
    assert after.nsp_head is None  # --no-nsp: the first run's NSP head is left
    # and no NSP metrics are reported (they were, as 0.0, before the fix).
    reported = json.loads((adapted / "metrics.json").read_text())["metrics"]
    assert "val_mlm_accuracy" in reported and not [k for k in reported if "nsp" in k]
    assert "nsp" not in done.stdout
    assert "Gradients do not exist" not in done.stderr  # the unread pooler's
    for a, b in zip(
        before.backbone.get_weights() + before.mlm_head.get_weights(),
        after.backbone.get_weights() + after.mlm_head.get_weights(),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)

    # Resuming keeps the run's starting point; naming it again is refused.
    again = ["pretrain", "--out", str(adapted), "--resume", "--init", str(base)]
    assert "--init with --resume" in refused(capsys, *again)


# Slow (~60 s on 2 cores). In the default run, test_reliability resumes a run
# mid-way from its last good checkpoint and checks that repeated epochs' history
# rows are replaced; test_crash_resume (slow) kills one with SIGKILL.
@pytest.mark.slow
def test_resume_continues_an_interrupted_run(corpus, tmp_path):
    run = tmp_path / "run"
    args = [
        "pretrain",
        "--corpus",
        corpus,
        "--out",
        str(run),
        "--vocab-size",
        "500",
        "--model",
        "tiny",
        "--seq-len",
        "32",
        "--batch-size",
        "8",
        "--steps",
        "12",
        "--eval-every",
        "4",
        "--held-out",
        "0",
    ]
    assert kbl(*args).returncode == 0
    # Simulate a crash after the second checkpoint: roll the state back to step 8.
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["step"] == 12
    os.remove(run / "model.weights.h5")
    (run / "checkpoints" / "state.json").write_text(
        json.dumps({"checkpoint": "ckpt-000000008.weights.h5", "epoch": 2, "step": 8})
    )
    resumed = kbl("pretrain", "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "step 8" in resumed.stdout
    assert json.loads((run / "metrics.json").read_text())["steps"] == 12
    with open(run / "history.csv") as f:
        # The repeated epoch's row replaces the one written before the "crash".
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]


# Slow (~2.5 minutes on 2 cores; fetches the built-in sentiment data with pip the
# first time).
@pytest.mark.slow
def test_quickstart_runs_the_whole_path(tmp_path):
    """`kbl quickstart`, the README's first command, shortened (20 pretraining
    steps, 20 dev records verified): a vocabulary and a pretrained run, a
    classifier that learned, every format exported and in parity with Keras, and
    the same predictions from each."""
    summary_file = tmp_path / "summary.json"
    out = tmp_path / "quickstart"
    args = ["--steps", "20", "--verify-limit", "20", "--json", str(summary_file)]
    done = kbl("quickstart", "--out", str(out), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "quickstart finished" in done.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["dev_accuracy"] > 0.6  # 0.74 measured; two balanced classes
    assert (out / "pretrain" / "vocab.txt").exists()
    report = summary["verify"]
    rows = report["formats"]
    assert {"saved_model", "saved_model_ids", "tflite", "tflite_int8", "onnx"} <= set(
        rows
    )
    for name, row in rows.items():
        lossy = name.endswith(("int8", "dynamic", "float16"))
        assert row["max_abs_diff"] < (0.2 if lossy else 1e-4), name
        assert abs(row["macro_f1"] - report["keras"]["macro_f1"]) <= 0.1, name
    predictions = summary["predictions"]
    labels = [p["label"] for p in predictions["keras"]]
    assert set(predictions) == {"keras", *(n for n in rows if ":" not in n)}
    for name, rows_of in predictions.items():
        if not name.endswith("int8"):  # int8 may flip a text near 0.5
            assert [p["label"] for p in rows_of] == labels, name


@pytest.mark.parametrize("case", ["missing", "empty", "blank_lines"])
def test_bad_corpus_exits_2_with_one_line(tmp_path, case):
    path = tmp_path / "corpus.txt"
    if case == "empty":
        path.write_text("")
    elif case == "blank_lines":
        path.write_text("\n\n   \n\n")
    done = kbl(
        "pretrain",
        "--corpus",
        str(path),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kbl pretrain: error:")
    assert str(path) in lines[0]
    assert "Traceback" not in done.stderr


def test_bad_arguments_exit_2():
    done = kbl("pretrain", "--out", "x", "--batch-size", "0")
    assert done.returncode == 2 and "must be at least 1" in done.stderr
    done = kbl("pretrain", "--out", "x", "--warmup", "1.5")
    assert done.returncode == 2 and "warmup must be a share" in done.stderr


@pytest.mark.parametrize(
    "argv, given",
    [
        # A value at its default counts as given (3e-4 is the default rate); a
        # store_true flag counts only when it is on the command line.
        (["pretrain", "--out", "r", "--resume", "--learning-rate", "3e-4"],
         {"out", "resume", "learning_rate"}),
        # The options of the command only: not kbl's own --debug, nor the
        # defaults that set_defaults gives (func).
        (["--debug", "pretrain", "--out", "pretrain", "--corpus", "a", "b",
          "--no-nsp", "--vocab-size", "300", "--xla", "auto"],
         {"out", "corpus", "no_nsp", "vocab_size", "xla"}),
    ],
)  # fmt: skip
def test_given_options_are_those_on_the_command_line(argv, given):
    from keras_bert_lite.cli import _given_options

    assert _given_options(argv) == given


def test_cache_mib_reaches_the_pipeline_and_is_checked(
    capsys, monkeypatch, corpus, tmp_path
):
    """`--cache-mib` is what the training pipeline is built with (in bytes), and a
    negative value is refused by the command line and by `training.pretrain`."""
    from keras_bert_lite import cli
    from keras_bert_lite.data import pretraining
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training import pretrain

    built = []

    class Built(Exception):
        pass

    def spy(*args, **kwargs):
        built.append(kwargs["cache_bytes"])
        raise Built

    monkeypatch.setattr(pretraining, "pretraining_dataset", spy)
    argv = ["pretrain", "--corpus", corpus, "--model", "tiny", "--vocab-size",
            "200", "--steps", "1"]  # fmt: skip
    for out, extra, expected in (
        ("r1", [], 64 << 20),
        ("r2", ["--cache-mib", "5"], 5 << 20),
    ):
        with pytest.raises(Built):
            cli.main([*argv, "--out", str(tmp_path / out), *extra])
        assert built.pop() == expected
    argv += ["--out", str(tmp_path / "r3")]
    assert "at least 0, got -1" in refused(capsys, *argv, "--cache-mib", "-1")
    with pytest.raises(KblError, match="cache_mib"):
        pretrain(corpus, str(tmp_path / "s"), cache_mib=-1)
