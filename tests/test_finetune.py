"""Fine-tuning end to end on small slices of the real task data: each task trains
without error, its loss falls, and the run directory evaluates and predicts."""

import csv
import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_file, stopped_after_epoch

# One padded row of token ids: the backbone's outputs on it compare two encoders.
ONE_ROW = {
    "token_ids": np.array([[2, 7, 9, 11, 3, 0]], "int32"),
    "segment_ids": np.zeros((1, 6), "int32"),
    "padding_mask": np.array([[1, 1, 1, 1, 1, 0]], "int32"),
}

TASK_FILES = {
    "classify": ("cls", "en", "movie_snippets.train.jsonl", "movie_snippets.dev.jsonl"),
    "pair": ("pair", "en", "wordnet_wic.train.jsonl", "wordnet_wic.dev.jsonl"),
    "tag": ("ner", "en", "wnut16.train.conll", "wnut16.dev.conll"),
    "qa": ("qa", "zh", "msra_mrc.train.json", "msra_mrc.dev.json"),
}


def _slice_lines(source, target, n):
    with open(source, encoding="utf-8") as f:
        lines = list(itertools.islice(f, n))
    with open(target, "w", encoding="utf-8") as out:
        out.writelines(lines)


def _slice_conll(source, target, sentences):
    lines, seen = [], 0
    with open(source, encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            seen += not line.strip()
            if seen >= sentences:
                break
    with open(target, "w", encoding="utf-8") as out:
        out.writelines(lines)


def _slice_squad(source, target, questions):
    data = json.load(open(source, encoding="utf-8"))
    kept, count = [], 0
    for paragraph in data["data"][0]["paragraphs"]:
        if count >= questions:
            break
        kept.append(paragraph)
        count += len(paragraph["qas"])
    data["data"][0]["paragraphs"] = kept
    json.dump(data, open(target, "w", encoding="utf-8"), ensure_ascii=False)


def _relabel_by_comma(path):
    """Sentence-level labels by a lexical rule ("comma" if the (second) text has a
    comma): a tiny random model learns it within seconds, where real sentiment or
    word-in-context labels need pretraining or far more steps. The texts stay real."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            text = record.get("text_b", record.get("text", ""))
            record["label"] = "comma" if "," in text else "none"
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(lines)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    out = {}
    for task, (kind, lang, train, dev) in TASK_FILES.items():
        paths = []
        train_size = 800 if task in ("classify", "pair") else 240
        for name, n in ((train, train_size), (dev, 60)):
            source = shared_file(kind, lang, name)
            target = root / f"{task}-{name}"
            if name.endswith(".conll"):
                _slice_conll(source, target, n)
            elif name.endswith(".json"):
                _slice_squad(source, target, n)
            else:
                _slice_lines(source, target, n)
                _relabel_by_comma(target)
            paths.append(str(target))
        out[task] = paths
    return out


@pytest.fixture(scope="module")
def vocab(task_data, tmp_path_factory):
    """A vocabulary learned from the training slices (English and Chinese)."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.text import learn_vocabulary

    sentences = [r["text"] for r in tasks.read_classification(task_data["classify"][0])]
    sentences += [r["text_a"] for r in tasks.read_classification(task_data["pair"][0])]
    sentences += [" ".join(w) for w, _ in tasks.read_conll(task_data["tag"][0])]
    for ex in tasks.read_squad(task_data["qa"][0]):
        sentences += [ex.question, ex.context]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(learn_vocabulary(sentences, 1500)) + "\n")
    return str(path)


# Sentence pairs are slow-marked: their packing is tested in test_task_data and
# test_export, and each fine-tuning here costs about a minute on 2 cores. So is mean
# pooling (25 s): its head is tested in test_model (the average over real tokens,
# every weight's gradient) and served in test_export; the loop is classify's. So is
# tagging without a CRF (22 s): tag-crf runs the same loop on the same data, and a
# softmax tagger still trains and is scored in the rare-tag test below.
@pytest.mark.parametrize(
    "task",
    [
        "classify",
        pytest.param("classify-mean", marks=pytest.mark.slow),
        pytest.param("pair", marks=pytest.mark.slow),
        pytest.param("tag", marks=pytest.mark.slow),
        "tag-crf",
        "qa",
    ],
)
def test_tiny_model_fine_tunes_and_loss_falls(task, task_data, vocab, tmp_path):
    from keras_bert_lite.training.finetune import evaluate, finetune

    crf = task == "tag-crf"
    pooling = "mean" if task == "classify-mean" else "cls"
    task = {"tag-crf": "tag", "classify-mean": "classify"}.get(task, task)
    train, dev = task_data[task]
    kind = "classify" if task == "pair" else task
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune(
            kind,
            train,
            dev,
            str(run),
            init="random",
            model="tiny",
            vocab=vocab,
            seq_len=64 if task != "qa" else 128,
            batch_size=16,
            epochs=5,
            learning_rate=3e-4,
            patience=5,
            doc_stride=48,
            crf=crf,
            pooling=pooling,
            # Scored in training and by `evaluate` (float32) alike: see
            # test_fine_tuning_trains_in_the_precision_it_is_given for bfloat16.
            precision="float32",
            # The CRF under XLA is tested in test_crf; compiling the whole tagger
            # again here would add a minute or two to the default test run.
            jit_compile=False if crf else "auto",
            log=lambda s: None,
            verbose=0,
        )
    # Every trainable weight gets a gradient: tagging, QA and mean pooling do not
    # read the pooler, which they do not train rather than leave for Keras to warn
    # about.
    missing = [
        str(w.message) for w in caught if "Gradients do not exist" in str(w.message)
    ]
    assert not missing, missing
    with open(run / "history.csv") as f:
        losses = [float(r["task_loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 5
    # Sentence-level labels are few (one per example), so their loss falls less.
    assert losses[-1] < losses[0] * (0.97 if task in ("classify", "pair") else 0.9), (
        losses
    )
    for name in ("config.json", "vocab.txt", "model.weights.h5", "metrics.json"):
        assert (run / name).exists()
    # The loss every 50 steps and each epoch's dev scores in TensorBoard.
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    curves = EventAccumulator(str(run / "tensorboard" / "train"))
    curves.Reload()
    key = {"classify": "macro_f1", "pair": "macro_f1", "tag": "f1", "qa": "f1"}[task]
    assert {"epoch_loss", f"epoch_dev_{key}"} <= set(curves.Tags()["tensors"])
    assert len(curves.Tensors(f"epoch_dev_{key}")) == 5
    assert result.metrics is not None
    again = evaluate(str(run), dev)
    assert again[key] == pytest.approx(result.metrics[key])
    if kind != "qa":
        assert (run / "labels.txt").exists()
    if kind == "classify":  # reloaded as it trained: `again` equal needs the pooling
        options = json.loads((run / "config.json").read_text())["task_options"]
        assert options["pooling"] == pooling
    if kind == "qa":  # answers are cut from each context by character offsets
        from keras_bert_lite.data import tasks
        from keras_bert_lite.training.finetune import predict

        examples = tasks.read_squad(dev, require_answers=False)[:12]
        answers = predict(
            str(run),
            [e.question for e in examples],
            contexts=[e.context for e in examples],
        )
        assert len(answers) == len(examples)
        for example, answer in zip(examples, answers, strict=True):
            if answer["start"] >= 0:
                assert (
                    example.context[answer["start"] : answer["end"]] == answer["text"]
                )
            else:
                assert answer["text"] == ""
    if crf:  # the transitions were learned (they start at zero) and are kept
        from keras_bert_lite import run as run_dir

        start, transitions, end = run_dir.load(str(run)).transition_scores()
        assert np.abs(transitions).max() > 1e-3


def _fine_tune_classifier(task_data, vocab, run, **options):
    from keras_bert_lite.training.finetune import finetune

    train, dev = task_data["classify"]
    defaults = dict(
        init="random",
        model="tiny",
        vocab=vocab,
        seq_len=32,
        batch_size=16,
        epochs=1,
        log=lambda s: None,
    )
    return finetune(
        "classify", train, dev, str(run), verbose=0, **{**defaults, **options}
    )


def test_a_sample_that_misses_a_rare_tag_keeps_the_training_files_labels(
    vocab, tmp_path
):
    """--max-train samples records, not the label set: a tag that occurs once in
    the training file, outside the sample, is still one the model has an output
    for, and dev records that carry it are scored rather than refused. A tag that
    is nowhere in the training file is refused, naming the file and line."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.finetune import evaluate, finetune

    sentences = [f"Anna went to Rome on day {k} ." for k in range(8)]
    chosen = set(tasks.sample_records(range(8), 4, seed=0))
    rare = min(set(range(8)) - chosen)  # a record the sample leaves out
    lines = []
    for k, sentence in enumerate(sentences):
        for i, word in enumerate(sentence.split()):
            tag = {0: "B-PER", 3: "B-LOC"}.get(i, "O")
            if k == rare and i == 6:
                tag = "B-DAY"
            lines.append(f"{word}\t{tag}")
        lines.append("")
    train = tmp_path / "train.conll"
    train.write_text("\n".join(lines) + "\n")
    dev = tmp_path / "dev.conll"
    dev.write_text("Bo\tB-PER\nleft\tO\non\tO\n3\tB-DAY\n")
    run = tmp_path / "run"
    tiny = dict(init="random", model="tiny", vocab=vocab, seq_len=16, seed=0)
    tiny.update(verbose=0, log=lambda s: None)  # seed 0: the sample drawn above
    train, dev = str(train), str(dev)
    finetune("tag", train, dev, str(run), batch_size=4, epochs=1, max_train=4, **tiny)
    assert tasks.read_labels(str(run / "labels.txt")) == [
        "B-DAY",
        "B-LOC",
        "B-PER",
        "O",
    ]
    # A tag that is nowhere in the training file: refused, naming its line, both
    # as a dev file for fine-tuning and as a file to evaluate on.
    bad = tmp_path / "bad.conll"
    bad.write_text("Bo\tB-PER\n\nleft\tO\non\tB-TIME\n")
    with pytest.raises(KblError, match=r"bad.conll:4: label 'B-TIME' is not one"):
        evaluate(str(run), str(bad))
    with pytest.raises(
        KblError, match=r"bad.conll:4: tag 'B-TIME' does not occur in .*train.conll;"
    ):
        finetune("tag", train, str(bad), str(tmp_path / "refused"), **tiny)


def test_the_tag_scheme_is_the_training_files_not_the_samples(vocab, tmp_path):
    """A BIOES file whose only S- tag lies outside the --max-train sample is still
    BIOES (the scheme was read from the sample, so the run took it for BIO and then
    could not score its own S-DAY tag)."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.training.finetune import finetune

    chosen = set(tasks.sample_records(range(8), 4, seed=0))
    rare = min(set(range(8)) - chosen)
    lines = []
    for k in range(8):
        words = f"we met on day {k} .".split()
        lines += [
            f"{w}\t{'S-DAY' if k == rare and i == 4 else 'O'}"
            for i, w in enumerate(words)
        ]
        lines.append("")
    train = tmp_path / "train.conll"
    train.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    tiny = dict(init="random", model="tiny", vocab=vocab, seq_len=16, seed=0)
    said = []
    tiny.update(verbose=0, log=said.append, batch_size=4, epochs=1, max_train=4)
    finetune("tag", str(train), str(train), str(run), **tiny)
    config = json.loads((run / "config.json").read_text())
    assert config["task_options"]["scheme"] == "BIOES"
    # The training file as dev: the run says what its dev scores then measure.
    assert any(s.startswith("note: --dev is the training file") for s in said), said


@pytest.fixture(scope="module")
def classifier_run(task_data, vocab, tmp_path_factory) -> str:
    """A tiny classifier fine-tuned for one epoch (dropout 0.1 in the encoder)."""
    run = tmp_path_factory.mktemp("classifier") / "run"
    _fine_tune_classifier(task_data, vocab, run)
    return str(run)


def test_predict_gives_labels_with_probabilities(classifier_run, capsys):
    from keras_bert_lite import cli
    from keras_bert_lite.training.finetune import predict

    out = predict(classifier_run, ["A gripping, beautiful film.", ""])
    assert [set(r["probabilities"]) for r in out] == [{"comma", "none"}] * 2
    for r in out:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
        assert "truncated_at" not in r
    # A text longer than the run's 32 pieces is read up to a character it names,
    # and kbl predict says so (it used to be cut silently).
    long = " ".join(["A gripping, beautiful film."] * 20)
    (cut,) = predict(classifier_run, [long])
    assert 0 < cut["truncated_at"] < len(long)
    assert cli.main(["predict", "--model", classifier_run, long]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["truncated_at"] == cut["truncated_at"]
    assert "1 text(s) longer than the classifier reads" in printed.err


def test_a_resumed_run_reports_the_time_of_its_earlier_calls(
    classifier_run, task_data, vocab, tmp_path
):
    """metrics.json's seconds is the run's: the checkpoint records the time so far and
    a resumed call adds its own, rather than reporting only the last call's."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(classifier_run, run)
    state_path = run / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    first = json.loads((run / "metrics.json").read_text())["seconds"]
    assert 0 < state["seconds"] <= first
    state["seconds"] = 1000.0  # as if the first call had taken 1,000 s to there
    state_path.write_text(json.dumps(state))
    # A run started before --pooling existed (no "pooling" recorded) resumes as the
    # [CLS] classifier it is.
    config = json.loads((run / "config.json").read_text())
    del config["task_options"]["pooling"]
    # A doc_stride other than today's default (runs from before it followed
    # seq_len) resumes with its own when none is given.
    config["task_options"]["doc_stride"] = 77
    (run / "config.json").write_text(json.dumps(config))
    result = _fine_tune_classifier(task_data, vocab, run, resume=True)
    assert 1000 < result.seconds < 1000 + first + 120
    options = json.loads((run / "config.json").read_text())["task_options"]
    assert options["doc_stride"] == 77
    assert json.loads((run / "metrics.json").read_text())["seconds"] == result.seconds


def test_a_resumed_run_given_other_settings_names_them(
    classifier_run, task_data, vocab
):
    """Resuming with a setting the run did not start with is refused before anything
    is written, and the error names the setting, what the run has and what was given."""
    from keras_bert_lite.errors import KblError

    before = {p.name: p.stat().st_mtime_ns for p in Path(classifier_run).rglob("*")}
    run = classifier_run
    with pytest.raises(KblError) as refused:
        _fine_tune_classifier(task_data, vocab, run, pooling="mean", resume=True)
    assert str(refused.value) == (
        f"{run}/config.json: the run's task_options differs from these arguments "
        "(pooling: 'cls' in the run, 'mean' given); resume it with the arguments "
        "it started with"
    )
    with pytest.raises(KblError, match=r"task_options .*\(seq_len: 32 in the run, 48"):
        _fine_tune_classifier(task_data, vocab, run, seq_len=48, resume=True)
    with pytest.raises(KblError, match=r"model .*num_layers: 2 in the run, 4 given\)"):
        _fine_tune_classifier(task_data, vocab, run, model="mini", resume=True)
    with pytest.raises(KblError, match=r"the run has layer_decay 1.0, not 0.8;"):
        _fine_tune_classifier(task_data, vocab, run, layer_decay=0.8, resume=True)
    with pytest.raises(KblError, match=r"the run has learning_rate 0.0001, not 0.001;"):
        _fine_tune_classifier(task_data, vocab, run, learning_rate=1e-3, resume=True)
    # The seed draws the --max-train sample and the shuffling; the others shape the
    # schedule the checkpoint is part way through.
    for setting, theirs, mine in (
        ("seed", 0, 1),
        ("epochs", 1, 2),
        ("batch_size", 16, 8),
        ("warmup", 0.1, 0.2),
        ("weight_decay", 0.01, 0.0),
    ):
        with pytest.raises(KblError, match=rf"has {setting} {theirs}, not {mine};"):
            _fine_tune_classifier(task_data, vocab, run, **{setting: mine}, resume=True)
    after = {p.name: p.stat().st_mtime_ns for p in Path(classifier_run).rglob("*")}
    assert after == before


def test_a_resumed_run_may_run_elsewhere_but_not_compute_otherwise(classifier_run):
    """Where and how a run computes (precision, XLA, strategy, accumulation) may
    change on resume, e.g. on another machine; a run recorded before a setting
    existed reads as that setting's default."""
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.run import read_config
    from keras_bert_lite.training.finetune import _check_same_run

    recorded = read_config(classifier_run)
    runtime = {"precision": "mixed_bfloat16", "jit_compile": True,
               "strategy": "mirrored", "accumulation": 4}  # fmt: skip
    given = {**recorded, "train": {**recorded["train"], **runtime}}
    _check_same_run(recorded, given, "config.json")
    older = {**recorded, "train": dict(recorded["train"])}
    del older["train"]["layer_decay"]
    _check_same_run(older, recorded, "config.json")
    with pytest.raises(KblError, match="has layer_decay 1.0, not 0.5;"):
        _check_same_run(
            older, {**recorded, "train": {**recorded["train"], "layer_decay": 0.5}}, ""
        )


def test_layer_decay_trains_the_lower_layers_slower(classifier_run, task_data, vocab):
    """From a run's weights with layer decay 0.01 (tiny: 2 encoder layers), the
    pooler trains at the full rate and the embeddings at 1e-6 of it: they hardly
    move, where the pooler moves as the full rate moves it."""
    from keras_bert_lite import run as run_dir

    out = Path(classifier_run).parent / "decayed"
    _fine_tune_classifier(task_data, vocab, out, init=classifier_run, layer_decay=0.01)
    assert json.loads((out / "config.json").read_text())["train"]["layer_decay"] == 0.01
    before, after = run_dir.load(classifier_run).backbone, run_dir.load(out).backbone

    def moved(layer):
        return max(
            float(np.abs(a - b).max())
            for a, b in zip(
                getattr(before, layer).get_weights(),
                getattr(after, layer).get_weights(),
                strict=True,
            )
        )

    assert moved("pooler") > 1e-4
    assert moved("embeddings") < 1e-3 * moved("pooler")


def test_backbone_dropout_replaces_the_runs_and_keeps_its_weights(classifier_run):
    """A run pretrained without dropout is fine-tuned with it: the encoder is rebuilt
    with the new rate and the same weights, so it computes the same at inference."""
    import keras

    from keras_bert_lite import run as run_dir
    from keras_bert_lite.training.finetune import _load_backbone

    def rates(backbone):
        return {
            layer.rate
            for layer in backbone._flatten_layers()
            if isinstance(layer, keras.layers.Dropout)
        }

    source = run_dir.load(classifier_run).backbone
    assert rates(source) == {0.1}
    backbone, _, config = _load_backbone(classifier_run, "tiny", None, True, 0.0)
    assert config.dropout == 0.0 and rates(backbone) == {0.0}
    assert backbone is not source
    for a, b in zip(source.get_weights(), backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        backbone(ONE_ROW)["sequence_output"],
        source(ONE_ROW)["sequence_output"],
        atol=1e-6,
    )
    unchanged, _, _ = _load_backbone(classifier_run, "tiny", None, True, None)
    assert rates(unchanged) == {0.1}


def test_precision_sets_the_policy_of_the_backbone_and_its_head(classifier_run):
    """--precision mixed_bfloat16 rebuilds the encoder under that policy with the same
    (float32) weights; a head built on it computes its output layer in float32, from
    the encoder's bfloat16 outputs cast up, so logits and a regression head's values
    are not rounded to bfloat16. float32 keeps the loaded encoder as it is."""
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.training.finetune import _load_backbone

    source = run_dir.load(classifier_run).backbone
    same, _, _ = _load_backbone(classifier_run, "tiny", None, True, None, "float32")
    assert same.dtype_policy.name == "float32"
    backbone, _, _ = _load_backbone(
        classifier_run, "tiny", None, True, None, "mixed_bfloat16"
    )
    assert backbone.dtype_policy.name == "mixed_bfloat16"
    for a, b in zip(source.weights, backbone.weights, strict=True):
        assert b.dtype == "float32"
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    sequence = backbone(ONE_ROW)["sequence_output"]
    assert sequence.dtype.name == "bfloat16"
    np.testing.assert_allclose(
        np.asarray(sequence, "float32"),
        source(ONE_ROW)["sequence_output"],
        atol=0.1,
    )
    pooled = np.asarray(backbone(ONE_ROW)["pooled_output"], "float32")
    for kind in ("single", "regression"):
        classifier = run_dir.build_task_model("classify", backbone, 2, kind)
        assert classifier.output_dense.compute_dtype == "float32"
        outputs = classifier(ONE_ROW)
        assert {k: v.dtype.name for k, v in outputs.items()} == {
            "logits": "float32",
            "probabilities": "float32",
        }
        kernel, bias = (w.numpy() for w in classifier.output_dense.weights)
        # A bfloat16 matmul would be off by about 2**-8 of the logits.
        np.testing.assert_allclose(
            outputs["logits"], pooled @ kernel + bias, rtol=1e-5, atol=1e-6
        )
    for task, layer in (("tag", "output_dense"), ("qa", "span_dense")):
        head = getattr(run_dir.build_task_model(task, backbone, 3), layer)
        assert head.compute_dtype == "float32"
    random, _, _ = _load_backbone(
        "random", "tiny", str(Path(classifier_run) / "vocab.txt"), True, None,
        "mixed_bfloat16",
    )  # fmt: skip
    assert random.dtype_policy.name == "mixed_bfloat16"


# ~25 s on 2 cores (bfloat16 is emulated on CPUs without bfloat16 units).
def test_fine_tuning_trains_in_the_precision_it_is_given(task_data, vocab, tmp_path):
    """finetune(precision=...) trains in it: under mixed_bfloat16 the losses differ
    from float32's (same seed, data and settings) by bfloat16's rounding, not more;
    metrics.json and config.json say which precision and XLA setting it trained
    with."""
    losses = {}
    for precision in ("float32", "mixed_bfloat16"):
        run = tmp_path / precision
        _fine_tune_classifier(
            task_data, vocab, run, precision=precision, jit_compile=False
        )
        with open(run / "history.csv") as f:
            losses[precision] = [float(r["task_loss"]) for r in csv.DictReader(f)]
        metrics = json.loads((run / "metrics.json").read_text())
        assert (metrics["precision"], metrics["xla"]) == (precision, False)
        train = json.loads((run / "config.json").read_text())["train"]
        assert (train["precision"], train["jit_compile"]) == (precision, False)
    assert losses["mixed_bfloat16"] != losses["float32"]
    np.testing.assert_allclose(losses["mixed_bfloat16"], losses["float32"], rtol=0.05)


def test_a_run_fine_tuned_with_backbone_dropout_saves_and_reloads(
    classifier_run, task_data, tmp_path
):
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.training.finetune import evaluate, finetune

    train, dev = task_data["classify"]
    out = str(tmp_path / "run")
    result = finetune(
        "classify",
        train,
        dev,
        out,
        init=classifier_run,
        backbone_dropout=0.0,
        seq_len=32,
        batch_size=16,
        epochs=1,
        precision="float32",  # as `evaluate` scores it
        log=lambda s: None,
        verbose=0,
    )
    assert run_dir.load(out).backbone.dropout == 0.0
    # The reloaded weights are the trained ones: dev scores as during training.
    again = evaluate(out, dev)
    for key in ("accuracy", "macro_f1"):
        assert again[key] == pytest.approx(result.metrics[key], abs=1e-6)


def test_pooling_is_refused_outside_classification(task_data, vocab, tmp_path):
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.finetune import finetune

    train, dev = task_data["tag"]
    with pytest.raises(KblError, match="--pooling applies to classification"):
        finetune(
            "tag",
            train,
            dev,
            str(tmp_path / "run"),
            init="random",
            model="tiny",
            vocab=vocab,
            pooling="mean",
            log=lambda s: None,
            verbose=0,
        )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "train_task, dev_lines, match",
    [
        (
            "classify",
            ['{"text": "ok", "label": "none"}', '{"text": "o", "label": "meh"}'],
            "dev.jsonl:2: label 'meh' is not one the model knows",
        ),
        # Pairs in training, single texts in dev: the dev set used to be packed as
        # one segment each and scored, silently, on inputs the model never saw.
        (
            "pair",
            ['{"text": "ok", "label": "none"}'],
            r"dev.jsonl:1: single texts \(text\), but .*pair.* holds sentence "
            r"pairs \(text_a, text_b\)",
        ),
    ],
)
def test_a_dev_file_the_model_cannot_score_is_an_error_naming_the_file(
    train_task, dev_lines, match, task_data, vocab, tmp_path
):
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.training.finetune import finetune

    train, _ = task_data[train_task]
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(line + "\n" for line in dev_lines))
    with pytest.raises(KblError, match=match):
        finetune(
            "classify",
            train,
            str(dev),
            str(tmp_path / "run"),
            init="random",
            model="tiny",
            vocab=vocab,
            log=lambda s: None,
            verbose=0,
        )


def _weights(path):
    import h5py

    found = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, item: (
                found.__setitem__(name, item[()])
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return found


def test_a_run_killed_and_resumed_ends_bit_identical_to_one_never_stopped(
    task_data, vocab, tmp_path
):
    """Resuming restores the shuffle order and the dropout masks, not only the
    weights and the optimizer: the weights come out exactly those of an uninterrupted
    run. Without the recorded seed states, they do not (the check can fail)."""
    import shutil

    options = dict(epochs=2, max_train=48, learning_rate=1e-3, patience=9)
    _fine_tune_classifier(task_data, vocab, tmp_path / "whole", **options)

    with stopped_after_epoch(0):
        _fine_tune_classifier(task_data, vocab, tmp_path / "killed", **options)
    shutil.copytree(tmp_path / "killed", tmp_path / "old")
    state_path = tmp_path / "old" / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 1 and len(state["seed_states"]) >= 2
    del state["seed_states"]  # as an older version wrote it
    state_path.write_text(json.dumps(state))

    logs = []
    for name in ("killed", "old"):
        _fine_tune_classifier(
            task_data, vocab, tmp_path / name, resume=True, **options, log=logs.append
        )
    whole = _weights(tmp_path / "whole" / "checkpoints" / "ckpt-000000006.weights.h5")
    for name, same in (("killed", True), ("old", False)):
        resumed = _weights(
            tmp_path / name / "checkpoints" / "ckpt-000000006.weights.h5"
        )
        assert resumed.keys() == whole.keys()
        assert all(np.array_equal(whole[k], resumed[k]) for k in whole) == same, name
    assert sum("no dropout seed states" in line for line in logs) == 1


def test_qa_windows_overlap_by_default_at_any_seq_len(vocab, tmp_path):
    """The default doc_stride is BERT's 128 where a window holds 256 context pieces
    or more, and half a window's context below that: at seq_len 128 with 64-piece
    questions a window holds 61, and a stride of 128 left the windows without
    overlap (an answer across an edge in none of them). A stride given larger than
    a window is kept, with a note."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.training.finetune import finetune

    assert tasks.default_doc_stride(384, 64) == 128
    assert tasks.default_doc_stride(128, 64) == 30
    assert tasks.default_doc_stride(64, 16) == 22
    squad = shared_file("qa", "en", "squad_fixture.json")
    for given, stride in [(None, 22), (100, 100)]:
        lines = []
        run = tmp_path / f"run-{given}"
        finetune(
            "qa",
            squad,
            squad,
            str(run),
            init="random",
            model="tiny",
            vocab=vocab,
            seq_len=64,
            max_query_len=16,
            doc_stride=given,
            epochs=1,
            log=lines.append,
            verbose=0,
        )
        options = json.loads((run / "config.json").read_text())["task_options"]
        assert options["doc_stride"] == stride
        noted = [line for line in lines if "windows do not overlap" in line]
        assert len(noted) == (given is not None), lines
