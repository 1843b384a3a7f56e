"""Reliability: hostile input gets one line and exit status 2 (nothing half-written),
a non-finite loss stops the run naming the step, a full disk leaves the previous
checkpoint in charge, a seed repeats a run, and loading runs no code from a run."""

from __future__ import annotations

import errno
import json
import os
import re

import numpy as np
import pytest

from tests.conftest import REPO, stopped_after_epoch, tiny_vocabulary

SENTENCES = [
    "The committee met on Tuesday to discuss the budget.",
    "Nobody expected the proposal to pass so quickly.",
    "Afterwards the members went home in the rain.",
]


def _corpus_text(documents: int = 6) -> str:
    return "\n\n".join("\n".join(SENTENCES) for _ in range(documents)) + "\n"


def _vocab(path, tokens=None) -> str:
    path.write_text("\n".join(tokens or tiny_vocabulary()) + "\n", encoding="utf-8")
    return str(path)


def _jsonl(path, records) -> str:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
        encoding="utf-8",
    )
    return str(path)


def _classify_records(n: int = 8) -> list[dict]:
    return [
        {"text": f"the {'dog' if i % 2 else 'cat'} was {i}", "label": "ab"[i % 2]}
        for i in range(n)
    ]


def _model_config(path, **overrides) -> str:
    from keras_bert_lite.config import BertConfig

    values = BertConfig.from_preset(
        "tiny", vocabulary_size=len(tiny_vocabulary())
    ).to_dict()
    values.update(overrides)
    path.write_text(json.dumps(values))
    return str(path)


def _squad(path, answer_start: int) -> str:
    context = "The committee met on Tuesday to discuss the budget."
    data = {
        "version": "v2.0",
        "data": [
            {
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "When did the committee meet?",
                                "answers": [
                                    {"text": "Tuesday", "answer_start": answer_start}
                                ],
                            }
                        ],
                    }
                ]
            }
        ],
    }
    path.write_text(json.dumps(data))
    return str(path)


def _pretrain(tmp, corpus=None, *extra) -> list[str]:
    if corpus is None:
        corpus = tmp / "corpus.txt"
        corpus.write_text(_corpus_text())
    return [
        "pretrain",
        "--corpus",
        str(corpus),
        "--out",
        str(tmp / "run"),
        "--model",
        "tiny",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--steps",
        "1",
        *extra,
    ]


def _finetune(tmp, task="classify", train=None, dev=None, *extra) -> list[str]:
    if train is None:
        train = _jsonl(tmp / "train.jsonl", _classify_records())
    return [
        "finetune",
        "--task",
        task,
        "--train",
        str(train),
        "--dev",
        str(dev or train),
        "--init",
        "random",
        "--vocab",
        _vocab(tmp / "vocab.txt"),
        "--model",
        "tiny",
        "--seq-len",
        "16",
        "--out",
        str(tmp / "run"),
        *extra,
    ]


def _old_run(tmp) -> str:
    run = tmp / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kbl_run": 0, "task": "classify"}))
    _vocab(run / "vocab.txt")
    return str(run)


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# Each case: (argv builder, the file or field the error must name, words it must say).
CASES = {
    # --- corpus ---
    "corpus_not_utf8": lambda t: (
        _pretrain(t, _write(t / "c.txt", _corpus_text().encode("utf-16"))),
        "c.txt",
        "UTF-8",
    ),
    "corpus_latin1": lambda t: (
        _pretrain(t, _write(t / "c.txt", ("café déjà été\n" * 50).encode("latin-1"))),
        "c.txt",
        "UTF-8",
    ),
    "corpus_empty": lambda t: (
        _pretrain(t, _write(t / "c.txt", b"")),
        "c.txt",
        "no text",
    ),
    "corpus_blank_lines": lambda t: (
        _pretrain(t, _write(t / "c.txt", b"\n \n\t\n\n")),
        "c.txt",
        "no text",
    ),
    "corpus_nul_bytes": lambda t: (
        _pretrain(t, _write(t / "c.txt", b"\x00" * 4096)),
        "c.txt",
        "binary",
    ),
    "corpus_missing": lambda t: (
        _pretrain(t, t / "nowhere.txt"),
        "nowhere.txt",
        "no such file",
    ),
    "corpus_one_sentence_documents": lambda t: (
        _pretrain(
            t,
            _write(t / "c.txt", "\n\n".join(SENTENCES * 4).encode()),
            "--vocab",
            _vocab(t / "v.txt"),
        ),
        "c.txt",
        "--no-nsp",
    ),
    "corpus_jsonl_not_json": lambda t: (
        _pretrain(t, _write(t / "c.jsonl", b'{"text": "fine"}\n{"text": oops}\n')),
        "c.jsonl:2",
        "not valid JSON",
    ),
    # --- vocabulary ---
    "vocab_missing_special_tokens": lambda t: (
        _pretrain(
            t, None, "--vocab", _vocab(t / "v.txt", ["the", "a", "[PAD]", "[UNK]"])
        ),
        "v.txt",
        "[PAD] [UNK] [CLS] [SEP] [MASK]",
    ),
    "vocab_duplicates": lambda t: (
        _pretrain(t, None, "--vocab", _vocab(t / "v.txt", tiny_vocabulary() + ["the"])),
        "v.txt",
        "repeats",
    ),
    "vocab_not_utf8": lambda t: (
        _pretrain(t, None, "--vocab", _write(t / "v.txt", "é\n".encode("latin-1"))),
        "v.txt",
        "UTF-8",
    ),
    "vocab_size_not_matching_model": lambda t: (
        _pretrain(
            t,
            None,
            "--vocab",
            _vocab(t / "v.txt"),
            "--model",
            _model_config(t / "m.json", vocabulary_size=999),
        ),
        "m.json",
        "vocabulary_size",
    ),
    "vocab_size_not_matching_model_finetune": lambda t: (
        _finetune(t)[:-2]
        + ["--model", _model_config(t / "m.json", vocabulary_size=999)]
        + ["--out", str(t / "run")],
        "m.json",
        "vocabulary_size",
    ),
    # --- model config ---
    "config_unknown_key": lambda t: (
        _pretrain(
            t,
            None,
            "--vocab",
            _vocab(t / "v.txt"),
            "--model",
            _model_config(t / "m.json", num_layer=3),
        ),
        "m.json",
        "num_layer",
    ),
    "config_wrong_type_int": lambda t: (
        _pretrain(
            t,
            None,
            "--vocab",
            _vocab(t / "v.txt"),
            "--model",
            _model_config(t / "m.json", num_layers="2"),
        ),
        "m.json",
        "num_layers",
    ),
    "config_wrong_type_float": lambda t: (
        _pretrain(
            t,
            None,
            "--vocab",
            _vocab(t / "v.txt"),
            "--model",
            _model_config(t / "m.json", dropout="high"),
        ),
        "m.json",
        "dropout",
    ),
    "config_not_an_object": lambda t: (
        _pretrain(t, None, "--model", _write(t / "m.json", b"[1, 2]")),
        "m.json",
        "object",
    ),
    "config_not_json": lambda t: (
        _pretrain(t, None, "--model", _write(t / "m.json", b"{'a': 1}")),
        "m.json",
        "JSON",
    ),
    "seq_len_beyond_positions": lambda t: (
        _pretrain(
            t,
            None,
            "--vocab",
            _vocab(t / "v.txt"),
            "--model",
            _model_config(t / "m.json", max_sequence_length=8),
        ),
        "seq_len",
        "max_sequence_length",
    ),
    "seq_len_beyond_positions_finetune": lambda t: (
        _finetune(t, "classify", None, None, "--seq-len", "600"),
        "seq_len",
        "max_sequence_length",
    ),
    "layer_decay_above_one": lambda t: (
        _finetune(t, "classify", None, None, "--layer-decay", "1.5"),
        "layer_decay",
        "(0, 1]",
    ),
    # --- task files ---
    "label_unknown_to_model": lambda t: (
        _finetune(
            t,
            "classify",
            None,
            _jsonl(t / "dev.jsonl", [{"text": "the dog", "label": "zzz"}]),
        ),
        "dev.jsonl:1",
        "zzz",
    ),
    "conll_three_fields": lambda t: (
        _finetune(
            t,
            "tag",
            _write(t / "train.conll", b"the\tO\ncat\tB-ANIMAL\tNN\n"),
        ),
        "train.conll:2",
        "3 fields",
    ),
    # Every tag known to a BIOES model, but the file is BIO: its entities would be
    # misread (New York ends at no E-) and scored silently.
    "bio_dev_for_a_bioes_model": lambda t: (
        _finetune(
            t,
            "tag",
            _write(
                t / "train.conll",
                b"New\tB-LOC\nYork\tI-LOC\nCity\tE-LOC\n\nJohn\tS-PER\nhi\tO\n",
            ),
            _write(t / "dev.conll", b"New\tB-LOC\nYork\tI-LOC\n\nhi\tO\n"),
        ),
        "dev.conll",
        "the tags are BIO (B-/I-, no E- or S-), but the model was trained on BIOES",
    ),
    "squad_offset_mismatch": lambda t: (
        _finetune(t, "qa", _squad(t / "train.json", answer_start=30)),
        "question q1",
        "answer_start",
    ),
    "jsonl_line_not_json": lambda t: (
        _finetune(t, "classify", _write(t / "train.jsonl", b'{"text": "a", "label"\n')),
        "train.jsonl:1",
        "JSON",
    ),
    "task_file_not_utf8": lambda t: (
        _finetune(
            t,
            "classify",
            _write(t / "train.jsonl", '{"text": "é", "label": "a"}\n'.encode("cp1252")),
        ),
        "train.jsonl",
        "UTF-8",
    ),
    "squad_file_not_utf8": lambda t: (
        _finetune(
            t,
            "qa",
            _write(
                t / "train.json", '{"data": [\n{"title": "café"}]}'.encode("cp1252")
            ),
        ),
        "train.json:2",
        "UTF-8",
    ),
    # A file in another task's format is named as such, not as bad JSON or columns.
    "tag_given_classification_jsonl": lambda t: (
        _finetune(t, "tag"),
        "train.jsonl",
        "the tag task reads CoNLL",
    ),
    "classify_given_conll": lambda t: (
        _finetune(t, "classify", _write(t / "train.conll", b"the\tO\ncat\tB-X\n")),
        "train.conll",
        "a .conll file is the tag task's (CoNLL",
    ),
    "classify_given_squad": lambda t: (
        _finetune(t, "classify", _squad(t / "train.json", answer_start=30)),
        "train.json",
        "a .json file is the qa task's (SQuAD",
    ),
    "qa_given_classification_jsonl": lambda t: (
        _finetune(t, "qa"),
        "train.jsonl",
        "the qa task reads SQuAD",
    ),
    # --- arguments ---
    "train_file_missing": lambda t: (
        _finetune(t, "classify", t / "nowhere.jsonl"),
        "nowhere.jsonl",
        "not found",
    ),
    "vocab_file_missing": lambda t: (
        _pretrain(t, None, "--vocab", str(t / "nowhere.txt")),
        "nowhere.txt",
        "not found",
    ),
    "init_run_of_another_version": lambda t: (
        _finetune(t)[:7] + ["--init", _old_run(t), "--out", str(t / "run")],
        "config.json",
        "version",
    ),
    "evaluate_run_of_another_version": lambda t: (
        ["evaluate", "--model", _old_run(t), "--data", str(t / "x.jsonl")],
        "config.json",
        "version",
    ),
    # An export or prepared records where a run is expected: named as what they are.
    "evaluate_an_export": lambda t: (
        [
            "evaluate",
            "--model",
            _write(t / "export.json", b'{"run": "/runs/sentiment"}').removesuffix(
                "/export.json"
            ),
            "--data",
            str(t / "x.jsonl"),
        ],
        "is an export, not a run",
        "exported from (/runs/sentiment), or score the export with `kbl verify",
    ),
    "finetune_from_prepared_records": lambda t: (
        _finetune(t)[:7]
        + ["--init", _write(t / "prepare.json", b"{}").removesuffix("/prepare.json")]
        + ["--out", str(t / "run")],
        "holds prepared records, not a run",
        "kbl pretrain --records",
    ),
    "import_a_kbl_run": lambda t: (
        ["import", "--from", _old_run(t), "--out", str(t / "run")],
        "already a keras-bert-lite run",
        "kbl finetune --init",
    ),
    "predict_missing_run": lambda t: (
        ["predict", "--model", str(t / "nowhere"), "some text"],
        "nowhere",
        "not found",
    ),
    # Schedule checks that come late in pretrain(): the run directory is not
    # started before they pass, or a corrected command would be told to --resume.
    "until_not_a_checkpoint_step": lambda t: (
        _pretrain(t, None, "--steps", "8", "--eval-every", "4", "--until", "6"),
        "until 6",
        "evaluation interval, 4",
    ),
    "eval_every_not_a_multiple_of_steps_per_execution": lambda t: (
        _pretrain(t, None, "--eval-every", "4", "--steps-per-execution", "3"),
        "eval_every 4",
        "steps_per_execution 3",
    ),
    # Numbers that would train backwards or not at all (they used to be accepted).
    "learning_rate_negative": lambda t: (
        _finetune(t, "classify", None, None, "--learning-rate=-1e-4"),
        "learning_rate",
        "positive number, got -0.0001",
    ),
    "learning_rate_nan": lambda t: (
        _pretrain(t, None, "--learning-rate", "nan"),
        "learning_rate",
        "positive number, got nan",
    ),
    "classify_seq_len_too_short": lambda t: (
        _finetune(t)[:-2] + ["--seq-len", "2", "--out", str(t / "run")],
        "seq_len 2",
        "at least 3",
    ),
    # An output file that is a directory: refused before the work (kbl vocab used to
    # learn the vocabulary and end in an IsADirectoryError traceback; --json after
    # a whole training run).
    "vocab_out_is_a_directory": lambda t: (
        ["vocab", "--corpus", _write(t / "c.txt", _corpus_text().encode()), "--out", t],
        str(t),
        "is a directory; --out must name a file",
    ),
    "json_is_a_directory": lambda t: (
        _finetune(t, "classify", None, None, "--json", str(t)),
        str(t),
        "is a directory; --json must name a file",
    ),
    "resume_nothing": lambda t: (
        ["pretrain", "--out", str(t / "run"), "--resume"],
        "run",
        "nothing to resume",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_gives_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    from keras_bert_lite import cli

    argv, names, says = CASES[case](tmp_path)
    capsys.readouterr()
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert re.match(r"kbl \w+: error: ", lines[0]), lines[0]
    assert names in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in err
    run = tmp_path / "run"
    assert (
        not (run / "config.json").exists() and not (run / "model.weights.h5").exists()
    )


def test_a_wrong_until_is_refused_before_the_vocabulary_is_learned(tmp_path, capsys):
    """With --steps given, --until is checked before the corpus is read for a
    vocabulary (a minute on a few MB of text), not only after."""
    from keras_bert_lite import cli

    schedule = ["--steps", "8", "--eval-every", "4", "--until", "6"]
    assert cli.main(_pretrain(tmp_path, None, *schedule)) == 2
    out, err = capsys.readouterr()
    assert "until 6" in err
    assert "vocabulary" not in out, out


def test_prepare_refuses_a_prepared_directory_before_learning_a_vocabulary(
    tmp_path, capsys
):
    """kbl prepare into a directory that holds prepared records is refused before
    the vocabulary is learned (it used to learn it, then refuse)."""
    from keras_bert_lite import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(_corpus_text())
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "prepare.json").write_text("{}")
    argv = ["prepare", "--corpus", str(corpus), "--out", str(tmp_path / "rec")]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "already holds prepared records" in err
    assert "vocabulary" not in out, out
    assert os.listdir(tmp_path / "rec") == ["prepare.json"]


def test_a_tpu_that_is_not_there_is_one_line_before_the_run_starts(
    tmp_path, capsys, monkeypatch
):
    """--strategy tpu without a TPU was TensorFlow's ValueError traceback ("Please
    provide a TPU Name"), and kbl finetune had no --tpu to name one."""
    from keras_bert_lite import cli
    from training import strategy

    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    if strategy._tpu_attached():
        pytest.skip("a TPU is attached here")
    for argv in (_finetune(tmp_path), _pretrain(tmp_path)):
        assert cli.main([*argv, "--strategy", "tpu"]) == 2
        err = capsys.readouterr().err
        assert "--strategy tpu: cannot connect to a TPU" in err, err
        assert "name it with --tpu NAME" in err and "Traceback" not in err
        assert not (tmp_path / "run" / "config.json").exists()
    parser = cli.build_parser().commands["finetune"]
    assert parser.parse_args([*_finetune(tmp_path)[1:], "--tpu", "x"]).tpu == "x"


def _one_megabyte_line(punctuated: bool) -> str:
    words = "the committee met on tuesday to discuss a budget nobody expected".split()
    rng = np.random.default_rng(0)
    text = []
    for i, word in enumerate(rng.choice(words, 200_000)):
        end = ". " if punctuated and i % 17 == 16 else " "
        text.append(word.capitalize() if punctuated and i % 17 == 0 else word)
        text.append(end)
    return "".join(text)[:1_000_000]


@pytest.mark.parametrize(
    "punctuated",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # ~25 s each on 2 cores
    ids=["sentences", "no-stops"],
)
def test_a_one_megabyte_line_trains_and_is_used_to_its_end(
    punctuated, tmp_path, capsys
):
    """One line of 1 MB (a paragraph with sentence stops, or none at all) used to hang
    the pair builder; now it is cut into pieces that fit and every piece is used."""
    import signal

    from keras_bert_lite import cli
    from keras_bert_lite.config import DataConfig
    from keras_bert_lite.data.pretraining import (
        InstanceBuilder,
        _shard_files,
        _tokenized_documents,
        text_room,
    )
    from keras_bert_lite.text import BertTokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text(_one_megabyte_line(punctuated) + "\n")
    vocab = _vocab(tmp_path / "v.txt")
    tokenizer = BertTokenizer.from_file(vocab)
    signal.alarm(300)  # the bug was quadratic: fail instead of hanging the suite
    try:
        config = DataConfig(seq_len=32)
        documents = _tokenized_documents(
            _shard_files([str(corpus)], None),
            tokenizer,
            "auto",
            None,
            lambda key: True,
            text_room(32, True),
        )
        (document,) = list(documents())
        assert max(len(s) for s in document) <= text_room(32, True)
        tokens = sum(len(s) for s in document)
        assert tokens == len(tokenizer([corpus.read_text()]).flat_values)
        import random

        instances = list(
            InstanceBuilder(config.seq_len, random.Random(0))(iter([document]))
        )
        used = sum(len(a) + len(b) for a, b, _ in instances)
        # Before, the line gave one example. Now it is walked to its end; what is lost
        # is BERT's own truncation of pairs that overshoot (two 29-piece cuts of
        # unpunctuated text make a 58-piece pair for 29 places).
        assert used > (0.7 if punctuated else 0.45) * tokens
        status = cli.main([*_pretrain(tmp_path, corpus, "--vocab", vocab)])
    finally:
        signal.alarm(0)
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "model.weights.h5").exists()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["pretrain", "--out", "x", "--batch-size", "0"], "must be at least 1"),
        (["pretrain", "--out", "x", "--steps", "-3"], "must be at least 1"),
        (["finetune", "--task", "classify"], "required"),
        (["export", "--model", "r", "--format", "zip", "--out", "o"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_exit_2(argv, says, capsys):
    from keras_bert_lite import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines


def test_debug_shows_the_traceback(tmp_path):
    from keras_bert_lite import cli
    from keras_bert_lite.errors import KblError

    with pytest.raises(KblError, match="nothing to resume"):
        cli.main(["--debug", "pretrain", "--out", str(tmp_path / "r"), "--resume"])


# === crash safety: non-finite loss, full disk, resume, determinism ===


def _dense_model(width: int = 8):
    import keras

    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def _stream(width: int = 8, bad_from: int | None = None):
    """A repeated stream of batch-1 examples; from example `bad_from` on the
    inputs are infinite, so the loss of that step is not finite."""
    import tensorflow as tf

    x = np.ones((16, width), "float32")
    if bad_from is not None:
        x[bad_from:] = np.inf
    return tf.data.Dataset.from_tensor_slices((x, np.zeros_like(x))).batch(1).repeat()


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.callbacks import (
        RunCheckpoint,
        StopOnNonFinite,
        latest_checkpoint,
    )

    directory = str(tmp_path / "checkpoints")
    model = _dense_model()
    callbacks = [StopOnNonFinite(directory), RunCheckpoint(directory)]
    with pytest.raises(KblError) as raised:  # steps 1-4 fine; step 5 sees inf
        model.fit(
            _stream(bad_from=4),
            epochs=5,
            steps_per_epoch=2,
            verbose=0,
            shuffle=False,
            callbacks=callbacks,
        )
    message = str(raised.value)
    assert message.startswith("step 5: the training loss is ")
    assert "ckpt-000000004" in message and "\n" not in message
    path, state = latest_checkpoint(directory)
    assert state["step"] == 4 and path.endswith("ckpt-000000004.weights.h5")
    restored = _dense_model()
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(path)
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_disk_full_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    """A stand-in that writes half a file and raises ENOSPC, as a full disk does."""
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.callbacks import RunCheckpoint, latest_checkpoint

    directory = tmp_path / "checkpoints"
    model = _dense_model()
    model.fit(
        _stream(),
        epochs=1,
        steps_per_epoch=2,
        verbose=0,
        shuffle=False,
        callbacks=[RunCheckpoint(str(directory))],
    )
    before = (directory / "state.json").read_text()

    def full_disk(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89HDF half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(model, "save_weights", full_disk)
    with pytest.raises(KblError) as raised:
        model.fit(
            _stream(),
            initial_epoch=1,
            epochs=2,
            steps_per_epoch=2,
            verbose=0,
            shuffle=False,
            callbacks=[RunCheckpoint(str(directory))],
        )
    message = str(raised.value)
    assert "no space left" in message and "step 4" in message
    assert "ckpt-000000002.weights.h5, step 2) is intact" in message
    assert "--resume" in message
    assert (directory / "state.json").read_text() == before
    assert sorted(os.listdir(directory)) == ["ckpt-000000002.weights.h5", "state.json"]
    monkeypatch.undo()
    resumed = _dense_model()
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(latest_checkpoint(str(directory))[0])
    assert int(resumed.optimizer.iterations.numpy()) == 2


@pytest.fixture
def small_filesystem(tmp_path):
    """A 600 KiB tmpfs of the test's own (skipped where mounting is not allowed)."""
    import shutil
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# h5py's destructor reports the failed write of the half-written temp file (the full
# disk this test makes) as an unraisable exception; the test checks what the user sees.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_checkpoint_on_a_really_full_disk(small_filesystem):
    """One checkpoint (~390 KiB: weights and Adam's two moments) fits; the next
    does not. The error is a KblError and the first checkpoint still loads."""
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.callbacks import RunCheckpoint, latest_checkpoint

    directory = small_filesystem / "checkpoints"
    model = _dense_model(width=180)
    callbacks = [RunCheckpoint(str(directory))]
    with pytest.raises(KblError, match="no space left.*step 2.*step 1\\) is intact"):
        model.fit(
            _stream(180),
            epochs=3,
            steps_per_epoch=1,
            verbose=0,
            shuffle=False,
            callbacks=callbacks,
        )
    path, state = latest_checkpoint(str(directory))
    assert state["step"] == 1
    assert not [n for n in os.listdir(directory) if n.startswith(".tmp-")]
    restored = _dense_model(width=180)
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(path)


def test_atomic_writes_leave_the_old_file_when_the_disk_is_full(tmp_path):
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.io import atomic_path, write_json

    path = tmp_path / "config.json"
    write_json(str(path), {"old": True})
    with pytest.raises(KblError, match="config.json: no space left"):
        with atomic_path(str(path)) as tmp:
            open(tmp, "w").write('{"new": tr')
            raise OSError(errno.ENOSPC, "No space left on device")
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["config.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_give_files_the_permissions_the_umask_allows(tmp_path, umask):
    # mkstemp makes the temporary file 0600 and the rename kept it: every file of a
    # run (config, vocabulary, weights) was private to its writer, where the umask
    # lets others read it (a model server or TensorBoard running as another user).
    from keras_bert_lite.io import write_json

    path = tmp_path / "config.json"
    old = os.umask(umask)
    try:
        write_json(str(path), {"new": True})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_throughput_is_none_when_no_step_was_timed():
    # Each epoch's first step (compiling, refilling the pipeline) is not timed, so a
    # run of one-step evaluation intervals (kbl pretrain --steps 10: one in ten)
    # times none; it printed "0 tokens/s".
    import time

    from keras_bert_lite.training.callbacks import Throughput

    throughput = Throughput(tokens_per_step=100)
    for epoch in range(3):
        throughput.on_epoch_begin(epoch)
        throughput.on_train_batch_end(0)
    assert throughput.tokens_per_second() is None
    throughput.on_epoch_begin(3)
    throughput.on_train_batch_end(0)
    time.sleep(0.02)
    throughput.on_train_batch_end(1)
    assert 0 < throughput.tokens_per_second() <= 100 / 0.02


def test_history_csv_drops_rows_of_repeated_epochs(tmp_path):
    from keras_bert_lite.training.callbacks import HistoryCSV

    path = str(tmp_path / "history.csv")
    first = HistoryCSV(path)
    for epoch in range(3):
        first.on_epoch_end(epoch, {"loss": 3.0 - epoch})
    resumed = HistoryCSV(path, keep_before=2)  # the checkpoint was of epoch 2
    resumed.on_epoch_end(2, {"loss": 0.5})
    resumed.on_epoch_end(3, {"loss": 0.25})
    import csv

    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], float(r["loss"])) for r in rows] == [
        ("0", 3.0),
        ("1", 2.0),
        ("2", 0.5),
        ("3", 0.25),
    ]


def _tiny_pretrain(root, name: str, **overrides):
    from keras_bert_lite.training import pretrain

    corpus = root / "corpus.txt"
    if not corpus.exists():
        corpus.write_text(_corpus_text(20))
        _vocab(root / "vocab.txt")
    options = dict(
        vocab=str(root / "vocab.txt"),
        model="tiny",
        seq_len=16,
        batch_size=4,
        steps=6,
        eval_every=2,
        held_out=0,
        log=lambda s: None,
        verbose=0,
    )
    options.update(overrides)
    return pretrain([str(corpus)], str(root / name), **options)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    _tiny_pretrain(root, "a")
    return root


def test_same_seed_same_data_gives_identical_weights(pretrained):
    import keras_bert_lite as kbl

    _tiny_pretrain(pretrained, "b")
    first = kbl.load(str(pretrained / "a")).get_weights()
    second = kbl.load(str(pretrained / "b")).get_weights()
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_pretraining_run_stopped_and_resumed_ends_bit_identical(pretrained, tmp_path):
    """Stopped after its step-4 checkpoint and resumed, a run replays the data
    stream to there and restores the dropout states: its weights are exactly those
    of the run never stopped. Given a checkpoint without the dropout states (as an
    older version wrote), the resumed run says so, and its weights differ."""
    import shutil

    import keras_bert_lite as kbl
    from keras_bert_lite.io import read_json, write_json
    from keras_bert_lite.training import pretrain

    with stopped_after_epoch(1):
        _tiny_pretrain(tmp_path, "stopped")
    shutil.copytree(tmp_path / "stopped", tmp_path / "old")
    state_path = str(tmp_path / "old" / "checkpoints" / "state.json")
    state = read_json(state_path)
    assert (state["step"], state["workers"]) == (4, 1)
    del state["seed_states"]
    write_json(state_path, state)

    whole = kbl.load(str(pretrained / "a")).get_weights()
    for name, same in (("stopped", True), ("old", False)):
        lines = []
        pretrain(None, str(tmp_path / name), resume=True, verbose=0, log=lines.append)
        assert any("data stream is replayed to its micro-batch 4" in x for x in lines)
        assert any("no dropout seed states" in x for x in lines) != same
        resumed = kbl.load(str(tmp_path / name)).get_weights()
        assert len(resumed) == len(whole)
        equal = all(np.array_equal(a, b) for a, b in zip(whole, resumed, strict=True))
        assert equal == same, name


def test_pretraining_stops_on_a_nan_loss_and_resumes_from_the_good_checkpoint(
    pretrained, tmp_path
):
    """The run is rolled back to its step-4 checkpoint and resumed with a learning
    rate that blows up: the error names the step, state.json keeps step 4; then, as
    the message says, a lower learning rate and --resume finish it."""
    import shutil

    from keras_bert_lite.errors import KblError
    from keras_bert_lite.io import read_json, write_json
    from keras_bert_lite.training import pretrain

    run = tmp_path / "run"
    shutil.copytree(pretrained / "a", run)
    os.remove(run / "model.weights.h5")
    write_json(
        str(run / "checkpoints" / "state.json"),
        {"checkpoint": "ckpt-000000004.weights.h5", "epoch": 2, "step": 4},
    )
    quiet = dict(log=lambda s: None, verbose=0)
    with pytest.raises(KblError) as raised:
        pretrain(None, str(run), resume=True, learning_rate=1e30, **quiet)
    message = str(raised.value)
    assert re.match(r"step [56]: the training loss is (nan|inf)", message), message
    assert "ckpt-000000004.weights.h5, step 4) is kept" in message
    assert "lower --learning-rate" in message and "with --resume" in message
    assert read_json(str(run / "checkpoints" / "state.json"))["step"] == 4
    assert not (run / "model.weights.h5").exists()
    result = pretrain(None, str(run), resume=True, learning_rate=1e-4, **quiet)
    assert result.steps == 6 and np.isfinite(result.metrics["loss"])
    config = read_json(str(run / "config.json"))
    assert config["train"]["learning_rate"] == 1e-4
    assert config["resumes"] == [
        {"step": 4, "train": {"learning_rate": [3e-4, 1e30]}},
        {"step": 4, "train": {"learning_rate": [1e30, 1e-4]}},
    ]


def test_a_resumed_run_is_lengthened_at_its_own_evaluation_interval(tmp_path):
    """A run on the default interval (a tenth of its steps) given more steps keeps
    the interval its checkpoints were written at, so the checkpoint's epoch still
    means its step; it ends at the new length with a checkpoint every 2 steps."""
    import shutil

    from keras_bert_lite.errors import KblError
    from keras_bert_lite.io import read_json
    from keras_bert_lite.training import pretrain

    run = tmp_path / "run"
    # (A model config.json with a dropout override: the override applies to it.)
    model = _model_config(tmp_path / "m.json", dropout=0.1)
    _tiny_pretrain(tmp_path, "run", steps=20, eval_every=None, model=model, dropout=0)
    assert read_json(str(run / "config.json"))["model"]["dropout"] == 0
    assert read_json(str(run / "checkpoints" / "state.json"))["epoch"] == 10
    quiet = dict(log=lambda s: None, verbose=0)
    with pytest.raises(KblError, match="at step 20 .*Give --steps 20 or more"):
        pretrain(None, str(run), resume=True, steps=10, **quiet)
    with pytest.raises(KblError, match="started with whole_word_mask=False"):
        pretrain(None, str(run), resume=True, steps=30, whole_word_mask=True, **quiet)
    with pytest.raises(KblError, match="started with batch_size=4"):
        pretrain(None, str(run), resume=True, steps=30, batch_size=8, **quiet)
    with pytest.raises(KblError, match="keeps the corpus, model it began with"):
        pretrain(["other.txt"], str(run), resume=True, model="tiny", **quiet)
    assert read_json(str(run / "config.json"))["train"]["steps"] == 20  # untouched
    shutil.copy(run / "model.weights.h5", tmp_path / "at-20.weights.h5")

    result = pretrain(None, str(run), resume=True, steps=30, **quiet)
    assert result.steps == 30
    config = read_json(str(run / "config.json"))
    assert (config["train"]["steps"], config["train"]["eval_every"]) == (30, 2)
    assert config["resumes"] == [
        {"step": 20, "train": {"steps": [20, 30], "eval_every": [None, 2]}}
    ]
    state = read_json(str(run / "checkpoints" / "state.json"))
    assert state == {
        "checkpoint": "ckpt-000000030.weights.h5",
        "epoch": 15,
        "step": 30,
        "seconds": state["seconds"],  # the run's time: tests/test_cli.py
        "workers": 1,
        "seed_states": state["seed_states"],  # tests/test_finetune.py
    }
    assert read_json(str(run / "metrics.json"))["steps"] == 30
    import keras_bert_lite as kbl

    model = kbl.load(str(run))
    at_30 = model.get_weights()
    model.load_weights(str(tmp_path / "at-20.weights.h5"))
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(model.get_weights(), at_30, strict=True)
    )


# === security: loading a run or an export runs no code from it ===

UNSAFE = [
    (r"\bimport pickle\b|\bpickle\.load", "pickle"),
    (r"(?<![\w.])eval\(|(?<![\w.])exec\(", "eval/exec"),
    (r"safe_mode\s*=\s*False", "Keras unsafe loading"),
    (r"keras\.(models\.)?load_model\(", "Keras whole-model loading"),
    (r"yaml\.(unsafe_)?load\(", "YAML"),
    (r"allow_pickle\s*=\s*True", "numpy pickles"),
    (r"marshal\.loads", "marshal"),
]


def test_no_code_is_deserialised_anywhere_in_the_package():
    """Runs and exports are read with json, h5 weights (load_weights into a model
    rebuilt from config.json) and TF/LiteRT/ONNX runtimes; torch files only with
    weights_only=True."""
    sources = []
    for folder in ("keras_bert_lite", "training", "export"):
        for root, _, names in os.walk(os.path.join(REPO, folder)):
            sources += [os.path.join(root, n) for n in names if n.endswith(".py")]
    assert len(sources) > 20
    for path in sources:
        text = open(path, encoding="utf-8").read()
        for pattern, what in UNSAFE:
            assert not re.search(pattern, text), f"{path}: {what}"
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"


def _run_dir(tmp_path, **changes):
    from keras_bert_lite.config import CONFIG_VERSION, BertConfig, DataConfig

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    _vocab(run / "vocab.txt")
    config = {
        "kbl_run": CONFIG_VERSION,
        "task": "pretraining",
        "model": BertConfig.from_preset(
            "tiny", vocabulary_size=len(tiny_vocabulary())
        ).to_dict(),
        "data": DataConfig().to_dict(),
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            config[section][field] = value
        else:
            config[section] = value
    (run / "config.json").write_text(json.dumps(config))
    return str(run)


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"model__class_name": "os.system"}, "unknown key(s) class_name"),
        ({"model__num_layers": "__import__('os')"}, "'num_layers' must be an integer"),
        ({"data__lowercase": "yes"}, "'lowercase' must be true or false"),
        ({"model": "BertBackbone()"}, "model: expected a JSON object"),
        ({"task": "!!python/object"}, "unknown task"),
        ({"kbl_run": 2}, "version 1"),
    ],
)
def test_run_config_is_data_checked_against_the_schema(tmp_path, changes, says):
    import keras_bert_lite as kbl
    from keras_bert_lite.errors import KblError

    run = _run_dir(tmp_path, **changes)
    with pytest.raises(KblError) as raised:
        kbl.load(run)
    assert says in str(raised.value) and "config.json" in str(raised.value)


def test_checkpoint_state_cannot_point_outside_the_run(tmp_path):
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.callbacks import latest_checkpoint

    directory = tmp_path / "checkpoints"
    directory.mkdir()
    outside = tmp_path / "evil.weights.h5"
    outside.write_bytes(b"x")
    for name in ("../evil.weights.h5", str(outside), "ckpt.pkl"):
        (directory / "state.json").write_text(
            json.dumps({"checkpoint": name, "epoch": 1, "step": 1})
        )
        with pytest.raises(KblError, match="not a checkpoint state"):
            latest_checkpoint(str(directory))
    # The run's time so far, added to by the call that resumes it, is a number.
    (directory / "ckpt-000000001.weights.h5").write_bytes(b"x")
    state = {"checkpoint": "ckpt-000000001.weights.h5", "epoch": 1, "step": 1}
    (directory / "state.json").write_text(json.dumps({**state, "seconds": "ten"}))
    with pytest.raises(KblError, match="seconds, a number"):
        latest_checkpoint(str(directory))
    (directory / "state.json").write_text(json.dumps({**state, "seconds": 10.5}))
    assert latest_checkpoint(str(directory))[1]["seconds"] == 10.5


@pytest.mark.parametrize("path", ["../elsewhere", "/etc/passwd", "a/../../x", ""])
def test_export_manifest_cannot_point_outside_the_export(tmp_path, path):
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.export.manifest import read_manifest
    from keras_bert_lite.export.predict import predict as predict_exported

    (tmp_path / "export.json").write_text(
        json.dumps(
            {
                "kbl_export": 1,
                "task": "classify",
                "labels": ["a"],
                "formats": [{"name": "tflite", "format": "tflite", "path": path}],
                "files": {},
            }
        )
    )
    with pytest.raises(KblError, match="formats"):
        read_manifest(str(tmp_path))
    with pytest.raises(KblError):
        predict_exported(str(tmp_path), ["text"])


def test_pretraining_refuses_a_layer_decay(tmp_path):
    """Layer decay is a fine-tuning setting: pretrain() says so, and writes nothing."""
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.pretrain import pretrain

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(_corpus_text(), encoding="utf-8")
    with pytest.raises(KblError, match=r"layer_decay 0.8: a fine-tuning setting"):
        pretrain(str(corpus), str(tmp_path / "run"), model="tiny", layer_decay=0.8)
    assert not (tmp_path / "run").exists()


def test_resuming_a_model_without_dropout_has_no_seed_states_to_miss():
    """A model pretrained with dropout 0 (as the README's mini runs are) draws no
    masks, so its checkpoint has no seed states and a resume loses nothing: it must
    not say that it goes on "with fresh dropout masks". One with dropout does miss
    them when an older checkpoint lacks them, and gets back exactly what was saved."""
    from keras_bert_lite.training.callbacks import restore_seed_states, seed_states
    from tests.test_model import tiny_backbone

    without = tiny_backbone(dropout=0.0)
    assert seed_states(without) == []
    assert restore_seed_states(without, None) and restore_seed_states(without, [])

    with_dropout = tiny_backbone(dropout=0.1)
    saved = seed_states(with_dropout)
    assert saved and not restore_seed_states(with_dropout, None)
    changed = [[seed, counter + 7] for seed, counter in saved]
    assert restore_seed_states(with_dropout, changed)
    assert seed_states(with_dropout) == changed
