"""Exports of a fine-tuned model: the tokenizer inside SavedModel and TFLite packs
awkward text exactly as training does, every float format agrees with Keras, and
the SavedModel serves from a process that cannot import keras_bert_lite."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import shared_file

# Inputs where tokenizers and packers disagree first.
AWKWARD = [
    "",
    "   \t\n  ",
    ("The film was wonderful, the cast charming. " * 500)[:20_000],
    "Loved it 😀👍🏽!!",
    "Café crème, naïve façade — déjà vu. ÀÉÎÕÜ",
    "这部电影很好看 but the ending was dull",
    "a" * 150,  # longer than the tokenizer's longest word: one [UNK]
    "the plot",
]

SUBJECTS = [
    "the film",
    "this movie",
    "the cast",
    "her performance",
    "the plot",
    "the soundtrack",
    "la película",
    "这部电影",
]
GOOD = ["wonderful", "moving", "brilliant", "charming", "très bien"]
BAD = ["dull", "boring", "clumsy", "tedious", "很差"]


def _records(n: int, seed: int, pair: bool = False) -> list[dict]:
    """Short reviews whose label follows the adjective (learnable in one epoch)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        good = bool(i % 2)
        subject = SUBJECTS[rng.integers(len(SUBJECTS))]
        adjective = (GOOD if good else BAD)[rng.integers(5)]
        text = f"{subject} was {adjective}" + (
            ", really." if rng.random() < 0.3 else "."
        )
        label = "pos" if good else "neg"
        if pair:
            other = SUBJECTS[rng.integers(len(SUBJECTS))]
            records.append({"text_a": f"{other}?", "text_b": text, "label": label})
        else:
            records.append({"text": text, "label": label})
    return records


def _write_jsonl(path, records) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return str(path)


def fine_tuned_run(root) -> str:
    """A tiny classifier fine-tuned for one epoch on generated reviews."""
    from keras_bert_lite.text import learn_vocabulary

    records = _records(96, 0)
    train = _write_jsonl(root / "train.jsonl", records)
    dev = _write_jsonl(root / "dev.jsonl", _records(32, 1))
    texts = [r["text"] for r in records]
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(learn_vocabulary(texts + AWKWARD, 300)) + "\n")
    return _fine_tune_tiny(train, dev, str(root / "run"), str(vocab), seq_len=32)


def _fine_tune_tiny(
    train: str, dev: str, run: str, vocab: str, seq_len: int, task="classify", **kw
) -> str:
    """A tiny model, randomly initialised, one epoch at a high learning rate (`kw`
    overrides or adds `finetune` arguments)."""
    from keras_bert_lite.training.finetune import finetune

    options = dict(batch_size=16, epochs=1, learning_rate=1e-3, log=lambda s: None)
    finetune(
        task,
        train,
        dev,
        run,
        init="random",
        model="tiny",
        vocab=vocab,
        seq_len=seq_len,
        verbose=0,
        **(options | kw),
    )
    return run


def _training_ids(run: str, records: list[dict]) -> dict:
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.data import tasks

    config = run_dir.read_config(run)
    return tasks.encode_classification(
        records, run_dir.load_tokenizer(run), config["task_options"]["seq_len"]
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run, export directory) with both SavedModels, float32 + float16 TFLite, the
    ids-only TFLite and ONNX."""
    from keras_bert_lite.export import export_all

    root = tmp_path_factory.mktemp("export")
    run = fine_tuned_run(root)
    out = root / "out"
    export_all(run, str(out), quantize="float16", log=lambda s: None)
    return run, str(out)


@pytest.fixture(scope="module")
def keras_outputs(exported):
    from keras_bert_lite import run as run_dir

    run, _ = exported
    features = _training_ids(run, [{"text": t} for t in AWKWARD])
    inputs = {k: features[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    outputs = run_dir.load(run).predict(inputs, verbose=0)
    return inputs, {k: np.asarray(v) for k, v in outputs.items()}


def _tflite_runner(path):
    from keras_bert_lite.export.to_tflite import interpreter

    return interpreter(path).get_signature_runner()


def _strings(texts):
    return np.array(texts, dtype=object)


def test_in_graph_pair_truncation_matches_training():
    import tensorflow as tf

    from keras_bert_lite.data.tasks import truncated_lengths
    from keras_bert_lite.export.text_graph import truncate_pair

    lengths = np.array([(a, b) for a in range(14) for b in range(14)], np.int32)
    for budget in range(0, 12):
        keep_a, keep_b = truncate_pair(
            tf.constant(lengths[:, 0]), tf.constant(lengths[:, 1]), budget
        )
        expected = [truncated_lengths(int(a), int(b), budget) for a, b in lengths]
        assert list(zip(keep_a.numpy(), keep_b.numpy(), strict=True)) == expected


def test_saved_model_and_tflite_pack_awkward_text_like_training(exported):
    import tensorflow as tf

    run, out = exported
    expected = _training_ids(run, [{"text": t} for t in AWKWARD])
    loaded = tf.saved_model.load(os.path.join(out, "saved_model", "1"))
    packed = loaded.signatures["tokenize"](text=tf.constant(AWKWARD))
    for key in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(packed[key].numpy(), expected[key], key)
    runner = _tflite_runner(os.path.join(out, "model.tflite"))
    for i, text in enumerate(AWKWARD):  # batch 1, as apps call it
        got = runner(text=_strings([text]))["token_ids"]
        np.testing.assert_array_equal(got[0], expected["token_ids"][i], repr(text[:30]))
    together = runner(text=_strings(AWKWARD))["token_ids"]  # and as one batch
    np.testing.assert_array_equal(together, expected["token_ids"])


def test_float32_exports_match_keras(exported, keras_outputs):
    import tensorflow as tf

    _, out = exported
    inputs, reference = keras_outputs
    expected = reference["probabilities"]
    assert np.all(np.isfinite(expected))
    loaded = tf.saved_model.load(os.path.join(out, "saved_model", "1"))
    served = loaded.signatures["serving_default"](text=tf.constant(AWKWARD))
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    by_ids = loaded.signatures["ids"](**tensors)
    ids_only = tf.saved_model.load(os.path.join(out, "saved_model_ids", "1"))
    by_ids_only = ids_only.signatures["serving_default"](**tensors)
    tflite_text = _tflite_runner(os.path.join(out, "model.tflite"))(
        text=_strings(AWKWARD)
    )
    tflite_ids = _tflite_runner(os.path.join(out, "model_ids.tflite"))(**inputs)
    from keras_bert_lite.export.to_onnx import session

    onnx_session = session(os.path.join(out, "model.onnx"))
    (onnx_probabilities,) = onnx_session.run(["probabilities"], inputs)
    for name, got in [
        ("saved_model serving_default", served["probabilities"].numpy()),
        ("saved_model ids", by_ids["probabilities"].numpy()),
        ("saved_model_ids", by_ids_only["probabilities"].numpy()),
        ("model.tflite", tflite_text["probabilities"]),
        ("model_ids.tflite", tflite_ids["probabilities"]),
        ("model.onnx", onnx_probabilities),
    ]:
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=name)
    labels = [s.decode() for s in served["label"].numpy()]
    names = ["neg", "pos"]
    assert labels == [names[i] for i in expected.argmax(-1)]
    assert served["labels"].numpy().tolist() == [[b"neg", b"pos"]] * len(AWKWARD)


def test_classifiers_pack_to_the_longest_row_with_the_same_probabilities(
    exported, keras_outputs
):
    """Serving packs a batch to its longest row, not to seq_len: one short text
    alone (a few positions) and the same text beside a full-length one must give
    the probabilities Keras gives at seq_len, and `token_ids` keeps [B, seq_len]."""
    import tensorflow as tf

    from keras_bert_lite import run as run_dir
    from keras_bert_lite.export import text_graph

    run, out = exported
    _, reference = keras_outputs
    expected = reference["probabilities"]
    tokenizer = run_dir.load_tokenizer(run)
    short = ["the plot", "Loved it 😀👍🏽!!"]
    fixed = text_graph.encode_single(tokenizer, tf.constant(short), 64)
    fitted = text_graph.encode_single(tokenizer, tf.constant(short), 64, fit=True)
    width = int(fixed["padding_mask"].numpy().sum(-1).max())
    for key in ("token_ids", "segment_ids", "padding_mask"):
        assert fitted[key].shape == (2, width), key
        np.testing.assert_array_equal(fitted[key], fixed[key][:, :width], key)
    empty = text_graph.encode_single(
        tokenizer, tf.constant([], tf.string), 64, fit=True
    )
    assert empty["token_ids"].shape == (0, 2)

    loaded = tf.saved_model.load(os.path.join(out, "saved_model", "1"))
    runner = _tflite_runner(os.path.join(out, "model.tflite"))
    for i, text in enumerate(AWKWARD):
        served = loaded.signatures["serving_default"](text=tf.constant([text]))
        lite = runner(text=_strings([text]))
        assert lite["token_ids"].shape == (1, 32)
        for name, got in (
            ("saved_model", served["probabilities"].numpy()),
            ("tflite", lite["probabilities"]),
        ):
            np.testing.assert_allclose(
                got[0], expected[i], rtol=0, atol=1e-4, err_msg=f"{name} {text[:20]!r}"
            )


def test_a_mean_pooling_classifier_serves_like_keras(exported, tmp_path):
    """--pooling mean averages over the real tokens: served one text at a time
    (packed to its own length) and in a batch (to the longest row), SavedModel and
    TFLite give the probabilities Keras gives at seq_len. The run is the exported
    one with its head switched to mean pooling (the weights are the same)."""
    import shutil

    import tensorflow as tf

    from keras_bert_lite import run as run_dir
    from keras_bert_lite.export import saved_model, tflite
    from keras_bert_lite.io import read_json, write_json

    run = tmp_path / "run"
    shutil.copytree(exported[0], run)
    config = read_json(str(run / "config.json"))
    config["task_options"]["pooling"] = "mean"
    write_json(str(run / "config.json"), config)
    model = run_dir.load(str(run))
    assert model.pooling == "mean"
    inputs = _training_ids(str(run), [{"text": t} for t in AWKWARD])
    inputs = {k: inputs[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    expected = np.asarray(model.predict(inputs, verbose=0)["probabilities"])
    cls_model = run_dir.load(exported[0])
    assert not np.allclose(  # the head changed what the model computes
        np.asarray(cls_model.predict(inputs, verbose=0)["probabilities"]),
        expected,
        atol=1e-3,
    )
    served = tf.saved_model.load(saved_model(str(run), str(tmp_path), warmup=False))
    serve = served.signatures["serving_default"]
    runner = _tflite_runner(tflite(str(run), str(tmp_path)))
    batch = [
        ("saved_model", serve(text=tf.constant(AWKWARD))["probabilities"].numpy()),
        ("tflite", runner(text=_strings(AWKWARD))["probabilities"]),
    ]
    for name, got in batch:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=name)
    for i, text in enumerate(AWKWARD):
        for name, got in (
            ("saved_model", serve(text=tf.constant([text]))["probabilities"].numpy()),
            ("tflite", runner(text=_strings([text]))["probabilities"]),
        ):
            np.testing.assert_allclose(
                got[0], expected[i], rtol=0, atol=1e-4, err_msg=f"{name} {text[:20]!r}"
            )


def test_float16_tflite_is_close_to_keras(exported, keras_outputs):
    _, out = exported
    _, reference = keras_outputs
    got = _tflite_runner(os.path.join(out, "model.float16.tflite"))(
        text=_strings(AWKWARD)
    )["probabilities"]
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, reference["probabilities"], rtol=0, atol=1e-2)


def test_onnx_axes_are_named_batch_and_sequence(exported):
    from keras_bert_lite.export.to_onnx import session

    _, out = exported
    inputs = session(os.path.join(out, "model.onnx")).get_inputs()
    assert {i.name: i.shape for i in inputs} == {
        name: ["batch", "sequence"]
        for name in ("token_ids", "segment_ids", "padding_mask")
    }


CLEAN_SERVING = textwrap.dedent(
    """
    import json, sys
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.modules["keras_bert_lite"] = None  # the package cannot be imported here
    try:
        import keras_bert_lite  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("keras_bert_lite is importable")
    import tensorflow as tf

    full, ids_only, texts, ids = sys.argv[1:]
    # Stock TensorFlow, no tensorflow-text ops: the ids-only model.
    assert "tensorflow_text" not in sys.modules
    by_ids = tf.saved_model.load(ids_only).signatures["ids"](
        **{k: tf.constant(v, tf.int32) for k, v in json.loads(ids).items()}
    )
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    out = tf.saved_model.load(full).signatures["serving_default"](
        text=tf.constant(json.loads(texts))
    )
    print(json.dumps({
        "label": [s.decode() for s in out["label"].numpy()],
        "probabilities": out["probabilities"].numpy().tolist(),
        "ids_probabilities": by_ids["probabilities"].numpy().tolist(),
        "our_modules": sorted(
            m for m, module in sys.modules.items()
            if m.startswith("keras_bert") and module is not None
        ),
    }))
    """
)


def test_saved_model_serves_where_keras_bert_lite_is_not_importable(
    exported, keras_outputs, tmp_path
):
    _, out = exported
    inputs, reference = keras_outputs
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            CLEAN_SERVING,
            os.path.join(out, "saved_model", "1"),
            os.path.join(out, "saved_model_ids", "1"),
            json.dumps(AWKWARD),
            json.dumps({k: v.tolist() for k, v in inputs.items()}),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["our_modules"] == []
    for key in ("probabilities", "ids_probabilities"):
        np.testing.assert_allclose(
            served[key], reference["probabilities"], rtol=0, atol=1e-4, err_msg=key
        )
    names = ["neg", "pos"]
    assert served["label"] == [names[i] for i in reference["probabilities"].argmax(-1)]


def _saved_model_cli(*args):
    import shutil

    command = (
        ["saved_model_cli"]
        if shutil.which("saved_model_cli")
        else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        command + list(args), capture_output=True, text=True, timeout=300, env=env
    )


def test_saved_model_layout_signatures_and_warmup(exported):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    _, out = exported
    expected = {
        "saved_model": {"serving_default", "ids", "tokenize"},
        "saved_model_ids": {"serving_default", "ids"},
    }
    for name, signatures in expected.items():
        version = os.path.join(out, name, "1")
        shown = _saved_model_cli("show", "--dir", version, "--all")
        assert shown.returncode == 0, shown.stderr[-2000:]
        listed = set(re.findall(r"signature_def\['(\w+)'\]", shown.stdout))
        assert listed - {"__saved_model_init_op"} == signatures, name
        for key in ("token_ids", "probabilities"):
            assert f"['{key}']" in shown.stdout
        warmup = os.path.join(version, "assets.extra", "tf_serving_warmup_requests")
        logs = [
            prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(warmup)
        ]
        requested = {log.predict_log.request.model_spec.signature_name for log in logs}
        assert requested == signatures - {"tokenize"}, name
        assert os.listdir(os.path.join(out, name)) == ["1"]  # no temporary left
        if name == "saved_model":
            for key in ("text", "label", "labels"):
                assert f"['{key}']" in shown.stdout


def test_export_json_describes_every_file(exported):
    run, out = exported
    manifest = json.loads(open(os.path.join(out, "export.json")).read())
    assert manifest["run"] == os.path.abspath(run)
    assert (manifest["task"], manifest["labels"], manifest["seq_len"]) == (
        "classify",
        ["neg", "pos"],
        32,
    )
    names = {f["name"] for f in manifest["formats"]}
    assert names == {
        "saved_model",
        "saved_model_ids",
        "tflite",
        "tflite_float16",
        "tflite_ids",
        "onnx",
    }
    umask = os.umask(0)
    os.umask(umask)
    for path, size in manifest["files"].items():
        full = os.path.join(out, path)
        assert os.path.getsize(full) == size
        # Readable by a model server running as another user, as the umask allows.
        assert os.stat(full).st_mode & 0o777 == 0o666 & ~umask, path


def test_verify_reports_parity_metric_size_and_latency(exported):
    from keras_bert_lite.export import verify

    _, out = exported
    report = verify(out, limit=12, log=lambda s: None)
    assert json.loads(open(os.path.join(out, "verify.json")).read()) == json.loads(
        json.dumps(report)
    )
    rows = report["formats"]
    assert set(rows) == {
        "saved_model",
        "saved_model:ids",
        "saved_model_ids",
        "tflite",
        "tflite_float16",
        "tflite_ids",
        "onnx",
    }
    for name, row in rows.items():
        bound = 1e-2 if "float16" in name else 1e-4
        assert row["max_abs_diff"] <= bound, (name, row)
        assert row["macro_f1"] == pytest.approx(report["keras"]["macro_f1"], abs=0.1)
        assert row["bytes"] > 0 and row["latency_ms"]["p95"] >= row["latency_ms"]["p50"]
        if row["input"] == "text":
            assert row["token_ids_match"], name


def test_predict_from_every_exported_format_matches_the_run(exported, capsys):
    from keras_bert_lite import cli
    from keras_bert_lite.export.predict import predict as predict_exported
    from keras_bert_lite.training.finetune import predict

    run, out = exported
    texts = AWKWARD[2:6]
    expected = predict(run, texts)
    manifest = json.loads(open(os.path.join(out, "export.json")).read())
    artefacts = [os.path.join(out, f["path"]) for f in manifest["formats"]] + [out]
    for path in artefacts:
        got = predict_exported(path, texts)
        bound = 1e-2 if "float16" in path else 1e-4
        for want, row in zip(expected, got, strict=True):
            assert row["text"] == want["text"]
            assert row["label"] == want["label"], path
            for label, p in want["probabilities"].items():
                assert abs(row["probabilities"][label] - p) <= bound, path
    onnx_file = os.path.join(out, "model.onnx")
    assert cli.main(["predict", "--model", onnx_file, texts[0]]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["label"] == expected[0]["label"]
    assert cli.main(["predict", "--model", os.path.join(out, "nope.tflite"), "x"]) == 2
    assert "nope.tflite" in capsys.readouterr().err


def test_predict_reads_text_lines_from_a_file_a_gz_or_standard_input(
    exported, tmp_path, capsys, monkeypatch
):
    """`kbl predict --input` on a plain text file: one text per non-blank line, a
    byte-order mark dropped, `.gz` read, `-` standard input; a missing file or bad
    UTF-8 is one line naming the file (these used to be tracebacks, and `-` was
    looked for as a file). A SQuAD file may be gzipped too."""
    import gzip
    import io

    from keras_bert_lite import cli
    from keras_bert_lite.training.finetune import predict

    run, _ = exported
    texts = AWKWARD[2:5]
    want = predict(run, texts)
    body = "\n".join([texts[0], "", texts[1], "  ", texts[2]]) + "\n"
    plain = tmp_path / "texts.txt"
    plain.write_text("\ufeff" + body, encoding="utf-8")
    packed = tmp_path / "texts.txt.gz"
    packed.write_bytes(gzip.compress(body.encode("utf-8")))

    def printed(*argv):
        capsys.readouterr()
        assert cli.main(["predict", "--model", run, *argv]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert printed("--input", str(plain)) == want
    assert printed("--input", str(packed)) == want
    monkeypatch.setattr(sys, "stdin", io.StringIO(body))
    assert printed("--input", "-") == want

    squad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "c",
                        "qas": [{"id": "q", "question": texts[0], "answers": []}],
                    }
                ]
            }
        ]
    }
    packed_squad = tmp_path / "questions.json.gz"
    packed_squad.write_bytes(gzip.compress(json.dumps(squad).encode("utf-8")))
    assert [r["text"] for r in printed("--input", str(packed_squad))] == texts[:1]
    lines = tmp_path / "records.json"  # JSON lines named .json: records, not SQuAD
    lines.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert printed("--input", str(lines)) == want

    bad = tmp_path / "bad.txt"
    bad.write_bytes(texts[0].encode("utf-8") + b"\n\xffno\n")
    for path, says in [
        (bad, "bad.txt:2: not valid UTF-8"),
        (tmp_path / "no.txt", "no.txt: file not found"),
    ]:
        capsys.readouterr()
        assert cli.main(["predict", "--model", run, "--input", str(path)]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err


def test_int8_calibration_reads_the_texts_it_is_given(exported):
    """Full int8 calibrates on its representative texts, whatever their order, so
    one run converts to one file. Fed NumPy object arrays of strings, the
    converter's calibrator read other texts than those given: the file changed from
    one conversion of a run to the next and with the texts' order (89 of 497
    tensors' scales on a tiny tagger), and a mini MSRA tagger's int8 file was off
    its float one by 0.26 in a probability (0.11 calibrated on the texts given)."""
    from keras_bert_lite.export.source import as_source
    from keras_bert_lite.export.to_tflite import convert

    run, _ = exported
    texts = [r["text"] for r in _records(12, 7)] + AWKWARD
    source = as_source(run)
    forward = convert(source, "int8", representative=texts)
    assert convert(source, "int8", representative=texts[::-1]) == forward


def test_int8_export_of_a_moved_run_calibrates_on_the_file_it_is_given(
    exported, tmp_path, capsys
):
    """A run copied away from its training file (to an export machine) exports
    full int8 with `kbl export --calibration FILE`, a .txt of one text per line or a
    task file; export.json says what calibrated it. Without the option the error
    names it (it used to name representative=, which the CLI had no way to give)."""
    import shutil

    from keras_bert_lite import cli
    from keras_bert_lite.io import read_json, write_json
    from keras_bert_lite.training.finetune import predict

    run, _ = exported
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    config = read_json(str(moved / "config.json"))
    dev = config["dev_file"]
    config["train_file"] = str(tmp_path / "gone" / "train.jsonl")
    config["dev_file"] = str(tmp_path / "gone" / "dev.jsonl")
    write_json(str(moved / "config.json"), config)
    out = tmp_path / "export"
    argv = ["export", "--model", str(moved), "--format", "tflite", "--quantize"]
    assert cli.main([*argv, "int8", "--out", str(out)]) == 2
    assert "kbl export --calibration FILE" in capsys.readouterr().err
    texts = [r["text"] for r in _records(40, 9)]
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(texts) + "\n")
    given = [*argv, "int8", "--calibration", str(calibration), "--out", str(out)]
    assert cli.main(given) == 0
    entry = {f["name"]: f for f in read_json(str(out / "export.json"))["formats"]}
    assert entry["tflite_int8"]["calibration"] == str(calibration)
    from keras_bert_lite.export.predict import predict as predict_exported

    want = predict(str(moved), texts[:8])
    got = predict_exported(str(out / "model.int8.tflite"), texts[:8])
    for w, g in zip(want, got, strict=True):
        for label, p in w["probabilities"].items():
            assert abs(g["probabilities"][label] - p) <= 0.05
    # verify's default data, the run's dev file, is gone too: --data is named.
    assert cli.main(["verify", "--export", str(out)]) == 2
    assert "dev file (verify's default data) is not there; pass --data" in (
        capsys.readouterr().err
    )
    assert cli.main(["verify", "--export", str(out), "--data", dev]) == 0
    # --calibration needs an int8 file to calibrate.
    assert (
        cli.main([*argv[:-1], "--calibration", str(calibration), "--out", str(out)])
        == 2
    )
    assert "--calibration calibrates full int8" in capsys.readouterr().err


# Slow (~5 minutes on 2 cores): a real-sized vocabulary, fine-tuning and every
# export; the float parity tests above cover the same code on a tiny run.
@pytest.mark.slow
def test_every_format_on_the_sentiment_dev_set(tmp_path):
    """The real dev set: float32 formats within 1e-4 of Keras, float16 within 1e-2,
    and full int8 moves dev accuracy by at most one point."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.export import export_all, verify
    from keras_bert_lite.text import learn_vocabulary

    train = shared_file("cls", "en", "movie_snippets.train.jsonl")
    dev = shared_file("cls", "en", "movie_snippets.dev.jsonl")
    texts = [r["text"] for r in tasks.read_classification(train)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(learn_vocabulary(texts, 4000)) + "\n")
    run = _fine_tune_tiny(
        train, dev, str(tmp_path / "run"), str(vocab), 64, batch_size=32, epochs=2
    )
    out = str(tmp_path / "out")
    export_all(run, out, quantize=["float16", "int8"], log=lambda s: None)
    report = verify(out, log=lambda s: None)
    assert report["records"] == 1056
    keras = report["keras"]["metrics"]["accuracy"]
    assert keras > 0.6  # a model that learned something, so that int8 can break it
    rows = report["formats"]
    for name, row in rows.items():
        if name == "tflite_int8":
            assert abs(row["accuracy"] - keras) <= 0.01, row
        else:
            bound = 1e-2 if "float16" in name else 1e-4
            assert row["max_abs_diff"] <= bound, (name, row)
        if row["input"] == "text":
            assert row["token_ids_match"], name


@pytest.fixture(scope="module")
def pair_run(exported, tmp_path_factory):
    """The fine-tuned run, turned into a sentence-pair run: its weights serve pairs
    as well, and its train and dev files now hold text_a/text_b records, which is
    how the exporter tells a pair run from before config.json's pair flag (taken
    out here, so that the files decide)."""
    import shutil

    from keras_bert_lite.io import read_json, write_json

    run, _ = exported
    root = tmp_path_factory.mktemp("pair")
    copy = root / "run"
    shutil.copytree(run, copy)
    config = read_json(str(copy / "config.json"))
    assert config["task_options"].pop("pair") is False
    for key, n, seed in (("train_file", 32, 0), ("dev_file", 16, 1)):
        config[key] = _write_jsonl(root / f"{key}.jsonl", _records(n, seed, pair=True))
    write_json(str(copy / "config.json"), config)
    return str(copy)


def test_pair_run_packs_both_texts_like_training(pair_run, tmp_path):
    import tensorflow as tf

    from keras_bert_lite.export import saved_model, tflite

    pairs = [(a, b) for a in AWKWARD[:4] for b in AWKWARD[2:6]]
    expected = _training_ids(pair_run, [{"text_a": a, "text_b": b} for a, b in pairs])
    assert expected["segment_ids"].any()
    texts = {"text": [a for a, _ in pairs], "text_pair": [b for _, b in pairs]}
    version = saved_model(pair_run, str(tmp_path), warmup=False)
    tokenize = tf.saved_model.load(version).signatures["tokenize"]
    packed = tokenize(**{k: tf.constant(v) for k, v in texts.items()})
    for key in ("token_ids", "segment_ids", "padding_mask"):
        np.testing.assert_array_equal(packed[key].numpy(), expected[key], key)
    runner = _tflite_runner(tflite(pair_run, str(tmp_path)))
    got = runner(**{k: _strings(v) for k, v in texts.items()})
    np.testing.assert_array_equal(got["token_ids"], expected["token_ids"])


def test_a_pair_run_predicts_pairs_from_the_run_the_cli_and_an_export(
    pair_run, tmp_path, capsys
):
    """`predict` packs both texts as training does, wherever they come from, and a
    pair model given single texts (or a single-text file to evaluate) is refused:
    it used to classify text_a alone, and read --input JSONL lines as raw text."""
    from keras_bert_lite import cli
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.export import tflite, verify
    from keras_bert_lite.export.predict import predict as predict_exported
    from keras_bert_lite.training.finetune import evaluate, predict

    records = _records(6, 2, pair=True)
    firsts = [r["text_a"] for r in records]
    seconds = [r["text_b"] for r in records]
    model = run_dir.load(pair_run)
    ids = _training_ids(
        pair_run, [{k: r[k] for k in ("text_a", "text_b")} for r in records]
    )
    inputs = {k: ids[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    expected = np.asarray(model.predict(inputs, verbose=0)["probabilities"])
    alone = _training_ids(pair_run, [{"text": a} for a in firsts])
    inputs = {k: alone[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    # The tiny model barely tells the two apart, but its output does move.
    first_alone = model.predict(inputs, verbose=0)["probabilities"]
    assert np.abs(expected - first_alone).max() > 1e-5
    labels = _labels(pair_run)

    got = predict(pair_run, firsts, pairs=seconds)
    assert [(r["text"], r["text_b"]) for r in got] == list(
        zip(firsts, seconds, strict=True)
    )
    np.testing.assert_allclose(
        [[r["probabilities"][name] for name in labels] for r in got],
        expected,
        rtol=0,
        atol=1e-6,
    )
    with pytest.raises(KblError, match="classifies sentence pairs: give the second"):
        predict(pair_run, firsts)

    data = _write_jsonl(tmp_path / "pairs.jsonl", records)
    assert cli.main(["predict", "--model", pair_run, "--input", data]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == got
    flags = [x for b in seconds[:2] for x in ("--text-b", b)]
    assert cli.main(["predict", "--model", pair_run, *firsts[:2], *flags]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # A batch of two, not six: the same labels, probabilities to float rounding
    # (which depends on the batch's shape on some CPUs: AVX2, not AMX).
    for row, want in zip(printed, got[:2], strict=True):
        assert {**row, "probabilities": None} == {**want, "probabilities": None}
        np.testing.assert_allclose(
            list(row["probabilities"].values()),
            list(want["probabilities"].values()),
            atol=1e-6,
        )
    assert cli.main(["predict", "--model", pair_run, *firsts[:2], *flags[:2]]) == 2
    assert "one --text-b for every text" in capsys.readouterr().err

    single = _write_jsonl(tmp_path / "single.jsonl", _records(4, 3))
    with pytest.raises(KblError, match=r"single.jsonl:1: single texts \(text\), but "):
        evaluate(pair_run, single)

    path = tflite(pair_run, str(tmp_path / "export"))
    exported = predict_exported(path, firsts, pairs=seconds)
    for want, row in zip(got, exported, strict=True):
        assert row["text_b"] == want["text_b"] and row["label"] == want["label"]
        for name, p in want["probabilities"].items():
            assert abs(row["probabilities"][name] - p) <= 1e-4
    with pytest.raises(KblError, match="a sentence-pair model; give the second"):
        predict_exported(path, firsts)
    # verify, like evaluate, refuses single texts for a pair model (it used to score
    # them as pairs with empty second texts).
    with pytest.raises(KblError, match=r"single.jsonl:1: single texts \(text\), but "):
        verify(str(tmp_path / "export"), data=single, log=lambda s: None)


def test_predict_output_that_nobody_reads_ends_quietly(pair_run, tmp_path, capsys):
    """`kbl predict ... | head -1`: the reader goes away; kbl exits 141, as a shell
    reports SIGPIPE, without a BrokenPipeError traceback."""
    from keras_bert_lite import cli

    data = _write_jsonl(tmp_path / "pairs.jsonl", _records(8, 2, pair=True))
    read, write = os.pipe()
    os.close(read)
    stdout = sys.stdout
    sys.stdout = open(write, "w", buffering=1)  # noqa: SIM115  (closed below)
    try:
        code = cli.main(["predict", "--model", pair_run, "--input", data])
    finally:
        sys.stdout.close()
        sys.stdout = stdout
    assert code == 141
    assert "Traceback" not in capsys.readouterr().err


def _labels(run: str) -> list[str]:
    from keras_bert_lite.data import tasks

    return tasks.read_labels(os.path.join(run, "labels.txt"))


def _tiny_run(root, kind: str, vocab: str, log=lambda s: None) -> str:
    """A tiny multi-label or regression classifier, fine-tuned for one epoch on
    generated reviews: labels pos/neg plus "really" where the text says it, or the
    number of words as the value."""

    def relabel(records):
        for r in records:
            if kind == "multi_label":
                good = r["label"] == "pos"
                r["label"] = [r["label"]] + (
                    ["really"] if "really" in r["text"] else []
                )
                if not good and len(r["text"]) % 3 == 0:
                    r["label"] = []  # a record may carry no label at all
            else:
                r["label"] = len(r["text"].split()) / 2.0
        return records

    root.mkdir()
    train = _write_jsonl(root / "train.jsonl", relabel(_records(64, 0)))
    dev = _write_jsonl(root / "dev.jsonl", relabel(_records(24, 1)))
    return _fine_tune_tiny(train, dev, str(root / "run"), vocab, seq_len=16, log=log)


def test_multi_label_and_regression_predictions(exported, tmp_path, capsys):
    """Multi-label predictions are the labels at or over the threshold tuned on
    dev (recorded in export.json too; `kbl predict --threshold` another), not the
    most probable one, and an exported file gives what the run gives; regression
    ones a value, scored by MSE, MAE and both correlations."""
    from keras_bert_lite import cli
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.export import tflite, verify
    from keras_bert_lite.export.predict import predict as predict_exported
    from keras_bert_lite.io import read_json, write_json
    from keras_bert_lite.training.finetune import evaluate, predict

    run, _ = exported
    texts = [r["text"] for r in _records(8, 5)] + AWKWARD[3:5]
    vocab = os.path.join(run, "vocab.txt")

    said = []  # what the runs say of their labels
    multi = _tiny_run(tmp_path / "multi", "multi_label", vocab, said.append)
    assert "64 training and 24 dev records, 3 labels (multi-label)" in "\n".join(said)
    assert _labels(multi) == ["neg", "pos", "really"]
    probabilities = [r["probabilities"] for r in predict(multi, texts)]
    # A threshold between the predictions, so that the label sets differ by text.
    threshold = float(np.median([p for row in probabilities for p in row.values()]))
    config = read_json(os.path.join(multi, "config.json"))
    config["task_options"]["threshold"] = threshold
    write_json(os.path.join(multi, "config.json"), config)
    got = predict(multi, texts)
    for row, p in zip(got, probabilities, strict=True):
        assert "label" not in row
        assert row["labels"] == [
            name for name in sorted(p, key=p.get, reverse=True) if p[name] >= threshold
        ]
    assert len({tuple(row["labels"]) for row in got}) > 1
    path = tflite(multi, str(tmp_path / "multi-export"))
    manifest = read_json(str(tmp_path / "multi-export" / "export.json"))
    assert manifest["threshold"] == threshold
    for want, row in zip(got, predict_exported(path, texts), strict=True):
        close = all(abs(p - threshold) > 1e-4 for p in want["probabilities"].values())
        assert row["labels"] == want["labels"] or not close
    # Another threshold, given at predict time (it could not be): 0 takes every
    # label, most probable first; the run and the export agree.
    every = [sorted(p, key=p.get, reverse=True) for p in probabilities]
    assert [r["labels"] for r in predict(multi, texts, threshold=0.0)] == every
    assert [r["labels"] for r in predict_exported(path, texts, threshold=0.0)] == every
    assert cli.main(["predict", "--model", multi, "--threshold", "0", texts[0]]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == every[0]
    for bad in ("1.5", "nan"):
        assert cli.main(["predict", "--model", path, "--threshold", bad, "x"]) == 2
        assert "give a probability from 0 to 1" in capsys.readouterr().err

    regression = _tiny_run(tmp_path / "regression", "regression", vocab, said.append)
    train = tmp_path / "regression" / "train.jsonl"
    scored = [json.loads(line)["label"] for line in open(train)]
    span = f"scores {min(scored):g} to {max(scored):g}"
    assert f"64 training and 24 dev records, regression: {span}" in "\n".join(said)
    scores = evaluate(regression, str(tmp_path / "regression" / "dev.jsonl"))
    assert {"mse", "mae", "pearson", "spearman"} <= set(scores)
    assert -1 <= scores["pearson"] <= 1 and scores["mae"] ** 2 <= scores["mse"]
    values = [r["value"] for r in predict(regression, texts)]
    assert all(isinstance(v, float) for v in values) and len(set(values)) > 1
    with pytest.raises(KblError, match="is a regression model: --threshold is the"):
        predict(regression, texts, threshold=0.5)
    with open(os.path.join(regression, "history.csv")) as f:
        logged = next(csv.reader(f))
    assert "task_loss" in logged and "accuracy" not in logged  # no accuracy to log
    # Scores written as whole numbers where they are (4, not 4.0), in JSONL and in
    # CSV, are the same targets (they were refused: "label '4' is not in the label
    # list (0 labels)"); verify reads them so too. A word is no score.
    dev = [json.loads(line) for line in open(tmp_path / "regression" / "dev.jsonl")]
    whole = [{**r, "label": int(r["label"])} if r["label"] % 1 == 0 else r for r in dev]
    assert any(isinstance(r["label"], int) for r in whole)
    ints = _write_jsonl(tmp_path / "whole.jsonl", whole)
    with open(tmp_path / "whole.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([r["text"], f"{r['label']:g}"] for r in dev)
    for path in (ints, str(tmp_path / "whole.csv")):
        assert evaluate(regression, path) == pytest.approx(scores), path
    tflite(regression, str(tmp_path / "regression-export"))
    report = verify(str(tmp_path / "regression-export"), data=ints, log=lambda s: None)
    assert report["keras"]["mse"] == pytest.approx(scores["mse"])
    with open(tmp_path / "word.csv", "w") as f:
        f.write("text,label\nfine,1.5\nbad,low\n")
    with pytest.raises(KblError, match=r"word.csv:3: label 'low' is not a number"):
        evaluate(regression, str(tmp_path / "word.csv"))


def test_a_crf_taggers_export_predicts_the_entities_its_run_predicts(tmp_path, capsys):
    """`kbl predict` on a tagger's export decodes as on the run: the run's words,
    the constrained Viterbi path with the CRF's learned transitions (export.json
    carries them). It used to take each piece's most probable tag, so a CRF's
    entities changed on export (26 of 151 MSRA dev sentences of a tiny model), and
    refused ids-only taggers. A raw-text export says where it stopped reading a
    long text; an ids-only one is fed the run's windows."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    from keras_bert_lite import cli
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.data import tasks
    from keras_bert_lite.errors import KblError
    from keras_bert_lite.export import saved_model, tflite, verify
    from keras_bert_lite.export.predict import predict as predict_exported
    from keras_bert_lite.export.predict import tagged
    from keras_bert_lite.export.to_tflite import interpreter as tflite_interpreter
    from keras_bert_lite.export.verification import _word_tags
    from keras_bert_lite.io import read_json
    from keras_bert_lite.text import learn_vocabulary
    from keras_bert_lite.training.finetune import predict
    from tests.test_finetune import _slice_conll

    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    _slice_conll(shared_file("ner", "en", "wnut16.train.conll"), train, 240)
    _slice_conll(shared_file("ner", "en", "wnut16.dev.conll"), dev, 30)
    sentences = [" ".join(w) for w, _ in tasks.read_conll(str(train))]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(learn_vocabulary(sentences, 800)) + "\n")
    run = _fine_tune_tiny(
        str(train), str(dev), str(tmp_path / "run"), str(vocab), 64, "tag", crf=True
    )
    # Transitions that matter: a trained-for-one-epoch CRF barely has any.
    model = run_dir.load(run)
    rng = np.random.default_rng(0)
    for weight in model.crf_layer.weights:
        weight.assign(rng.normal(0, 3, weight.shape).astype("float32"))
    model.save_weights(os.path.join(run, run_dir.WEIGHTS))

    # Tweets that fit the export's 62 pieces, one that does not, and punctuation.
    tokenizer = run_dir.load_tokenizer(run)
    texts = [" ".join(w) for w, _ in tasks.read_conll(str(dev))]
    fits = [t for t in texts if len(tokenizer([t])[0]) <= 62]
    assert len(fits) >= 10
    texts = fits + [" ".join(texts), "Alice , Bob (and 李白) met in Paris... ok"]
    want = predict(run, texts)
    assert sum(len(row["entities"]) for row in want) >= 10
    path = tflite(run, str(tmp_path / "export"))
    manifest = read_json(str(tmp_path / "export" / "export.json"))
    assert manifest["scheme"] == "BIO" and len(manifest["crf"]["transitions"]) == len(
        manifest["labels"]
    )
    # The raw-text .tflite file reads every window of a long text, each piece
    # from the window where it has the most context, as the run does (it used to
    # read the first window and flag the rest `truncated_at`).
    got = predict_exported(path, texts)
    long = len(texts) - 2
    assert not [row for row in got if "truncated_at" in row]
    assert got == want
    litert = tflite_interpreter(path).get_signature_runner()
    out = litert(text=np.array([texts[long], texts[0]], dtype=object))
    pieces = len(tokenizer([texts[long]])[0])
    assert out["windows"].tolist() == [len(tasks._windows(pieces, 62, 31)), 1]
    assert out["text_probabilities"].shape == (2, pieces, len(manifest["labels"]))
    # A file exported before the .tflite files windowed gives the first window's
    # outputs alone: kbl predict tags what it read and says where it stopped.
    first = {k: out[k] for k in ("probabilities", "piece_begin", "piece_end")}
    cut, short = tagged([texts[long], texts[0]], first, manifest)
    assert 0 < cut["truncated_at"] < len(texts[long]) and short == got[0]
    assert all(entity["end"] <= cut["truncated_at"] for entity in cut["entities"])
    # The SavedModel windows and decodes in its graph as the run does, so TF
    # Serving answers with the run's entities, the long text's included, without
    # kbl.
    served = saved_model(run, str(tmp_path / "export"), warmup=False)
    signature = tf.saved_model.load(served).signatures["serving_default"]
    out = signature(text=tf.constant(texts))
    assert [[t.decode() for t in row if t] for row in out["entity_text"].numpy()] == [
        [entity["text"] for entity in row["entities"]] for row in want
    ]
    for batch in ([], [""], ["", "  "]):  # no text, texts without words
        out = signature(text=tf.constant(batch, tf.string))
        assert out["entity_text"].shape == (len(batch), 0)
    # Each word tokenized on its own, as the run does: a word the tokenizer drops
    # whole gets an [UNK], and characters Python splits words at but the
    # tokenizer drops (U+001C, U+0085) still split them.
    odd = ["Alice \u200b met Bob\x1cSmith in #Paris\x85today , ok", "\u200b"]
    words = [[t[s:e] for s, e in tasks.words_with_offsets(t)] for t in odd]
    features = tasks.encode_tagging(words, None, tokenizer, 64, manifest["labels"])
    out = signature(text=tf.constant(odd))
    np.testing.assert_array_equal(out["token_ids"].numpy(), features.token_ids)
    # `word_start`: the pieces training labels, each word's first ("#Paris" is
    # one word: its "paris" piece is not a start, though no ## continuation).
    np.testing.assert_array_equal(out["word_start"].numpy(), features.label_weights > 0)
    assert predict_exported(served, odd) == predict(run, odd)
    assert predict_exported(served, texts) == want
    # An ids-only export is fed the run's windows: the run's entities, all of them.
    ids_only = tflite(run, str(tmp_path / "export"), ids_only=True)
    assert predict_exported(ids_only, texts) == want
    # kbl verify scores the raw-text files too, decoded as kbl predicts: on a file
    # whose tags are the run's own entities, every format scores F1 1 (on the
    # tweets whose raw text splits into the file's words: "#tag" does, "&amp;"
    # is "&amp" and ";").
    own, kept = tmp_path / "own.conll", 0
    with open(own, "w") as f:
        for text, row in zip(fits, want, strict=False):
            words = text.split(" ")
            if [text[s:e] for s, e in tasks.words_with_offsets(text)] != words:
                continue
            kept += 1
            _, spans = tasks.join_words_with_offsets(words)
            tags = _word_tags(spans, row["entities"], "BIO")
            f.write("".join(f"{w}\t{t}\n" for w, t in zip(words, tags, strict=True)))
            f.write("\n")
    assert kept >= 10
    report = verify(str(tmp_path / "export"), data=str(own), log=lambda s: None)
    assert report["keras"]["f1"] == 1.0
    # A tag the model does not know is named by file and line, as evaluate names it
    # (verify used to check classification labels only, and fail without the file).
    unknown = tmp_path / "unknown.conll"
    unknown.write_text("Paris\tO\n\nthe\tO\ncat\tB-ANIMAL\n")
    with pytest.raises(KblError, match=r"unknown.conll:4: label 'B-ANIMAL' is not"):
        verify(str(tmp_path / "export"), data=str(unknown), log=lambda s: None)
    for name, row in report["formats"].items():
        assert row["f1"] == 1.0 and row["max_abs_diff"] < 1e-4, name
        if row["input"] == "text":
            assert row["token_ids_match"] and row["compared"] == kept, name
    assert cli.main(["predict", "--model", path, texts[long]]) == 0
    assert "truncated" not in capsys.readouterr().err
    # A CoNLL file as input: its sentences as raw text, one prediction per word.
    assert cli.main(["predict", "--model", run, "--input", str(dev)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sentences = tasks.read_conll(str(dev))
    assert [row["text"] for row in printed] == [" ".join(w) for w, _ in sentences]
    # The same sentences as tokens alone, as a test file without tags comes.
    bare = tmp_path / "bare.conll"
    bare.write_text("\n\n".join("\n".join(w) for w, _ in sentences) + "\n")
    assert cli.main(["predict", "--model", run, "--input", str(bare)]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert again == printed
    # A tagger reads CoNLL written .tsv as it trains on one (it used to be read as
    # classification records: "the header must name a 'text' column"); so does its
    # export.
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(dev.read_text())
    for model in (run, str(tmp_path / "export")):
        assert cli.main(["predict", "--model", model, "--input", str(tsv)]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [row["text"] for row in rows] == [row["text"] for row in printed]


def test_qa_exports_answer_as_the_run_answers(tmp_path, capsys):
    """`kbl predict` on a QA export: ids-only artefacts are fed every window, as
    the run packs them, and answer as the run does; so does the SavedModel, which
    windows in its graph, and the raw-text .tflite file, which windows in the file
    (it used to read the first window and say where it stopped). QA exports used
    to be refused."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    from keras_bert_lite import cli
    from keras_bert_lite.data import tasks
    from keras_bert_lite.export import saved_model, tflite, verify
    from keras_bert_lite.export.predict import predict as predict_exported
    from keras_bert_lite.export.predict import text_answers
    from keras_bert_lite.export.to_tflite import interpreter as tflite_interpreter
    from keras_bert_lite.io import read_json, write_json
    from keras_bert_lite.text import learn_vocabulary
    from keras_bert_lite.training.finetune import predict
    from tests.test_finetune import _slice_squad

    train, dev = tmp_path / "train.json", tmp_path / "dev.json"
    _slice_squad(shared_file("qa", "zh", "msra_mrc.train.json"), train, 40)
    _slice_squad(shared_file("qa", "zh", "msra_mrc.dev.json"), dev, 30)
    examples = tasks.read_squad(str(dev))
    sentences = [
        t for ex in tasks.read_squad(str(train)) for t in (ex.question, ex.context)
    ]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(learn_vocabulary(sentences, 1500)) + "\n")
    run = _fine_tune_tiny(
        str(train),
        str(dev),
        str(tmp_path / "run"),
        str(vocab),
        64,
        "qa",
        max_query_len=24,
        doc_stride=24,
    )
    config = read_json(os.path.join(run, "config.json"))
    config["task_options"]["null_threshold"] = 1e9  # always answer: spans to compare
    write_json(os.path.join(run, "config.json"), config)
    questions = [ex.question for ex in examples]
    contexts = [ex.context for ex in examples]
    want = predict(run, questions, contexts=contexts)
    assert all(row["start"] >= 0 for row in want)

    def spans(rows):
        return [(r["text"], r["start"], r["end"]) for r in rows]

    ids_only = tflite(run, str(tmp_path / "export"), ids_only=True)
    assert spans(predict_exported(ids_only, questions, contexts=contexts)) == spans(
        want
    )
    raw = tflite(run, str(tmp_path / "export"))
    got = predict_exported(raw, questions, contexts=contexts)
    assert spans(got) == spans(want) and not [r for r in got if "truncated_at" in r]
    # Full int8 too: the model's -1e9 on padding took the logits' whole int8 range,
    # every logit came out 0 and no answer was the run's.
    for ids in (False, True):
        int8 = tflite(run, str(tmp_path / "export"), quantize="int8", ids_only=ids)
        quantized = spans(predict_exported(int8, questions, contexts=contexts))
        same = sum(a == b for a, b in zip(quantized, spans(want), strict=True))
        assert same >= 0.9 * len(want), (ids, same)
    litert = tflite_interpreter(raw).get_signature_runner()
    out = litert(
        question=np.array(questions, dtype=object),
        context=np.array(contexts, dtype=object),
    )
    long = np.flatnonzero(out["windows"] > 1)
    assert 0 < len(long) < len(got)  # some contexts go on past the first window
    assert out["window_start_logits"].shape == (out["windows"].sum(), 64)
    # A file exported before the .tflite files windowed gives the first window's
    # outputs alone: kbl predict answers from it and says where it stopped.
    first = {k: v for k, v in out.items() if not k.startswith("window")}
    old = text_answers(examples, first, 1e9)
    assert [i for i, r in enumerate(old) if "truncated_at" in r] == long.tolist()
    for i, row in enumerate(old):
        if i in long:
            assert 0 < row["truncated_at"] < len(contexts[i])
            assert row["end"] <= row["truncated_at"]
        else:
            assert spans([row]) == spans([want[i]])
    args = ["predict", "--model", raw, "--question", questions[0]]
    assert cli.main([*args, "--context", contexts[0]]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == got[0]["text"]
    # The SavedModel windows the context and decodes in its graph as the run does:
    # TF Serving gives the run's answers, long contexts included, without kbl.
    served = saved_model(run, str(tmp_path / "export"), warmup=False)
    signature = tf.saved_model.load(served).signatures["serving_default"]
    out = signature(question=tf.constant(questions), context=tf.constant(contexts))
    assert [a.decode() for a in out["answer"].numpy()] == [r["text"] for r in want]
    assert (out["windows"].numpy()[long] > 1).all()
    for batch in ([], [""], ["", "\u200b"]):  # no question, empty contexts
        strings = tf.constant(batch, tf.string)
        out = signature(question=strings, context=strings)
        assert out["answer"].numpy().tolist() == [b""] * len(batch)
    assert predict_exported(served, questions, contexts=contexts) == want
    # kbl verify scores the raw-text files too: on a file whose answers are the
    # run's own, every format gets every one, long contexts included.
    own = tmp_path / "own.json"
    paragraphs = [
        {
            "context": ex.context,
            "qas": [
                {
                    "id": ex.id,
                    "question": ex.question,
                    "answers": [{"text": row["text"], "answer_start": row["start"]}],
                }
            ],
        }
        for ex, row in zip(examples, want, strict=True)
    ]
    write_json(str(own), {"version": "v2.0", "data": [{"paragraphs": paragraphs}]})
    printed = []
    report = verify(str(tmp_path / "export"), data=str(own), log=printed.append)
    assert not [line for line in printed if "records longer than" in line]
    assert report["keras"]["f1"] == 100.0
    rows = report["formats"]
    for name in ("tflite_ids", "saved_model", "tflite"):
        assert rows[name]["exact"] == 100.0, name
    assert rows["saved_model"]["truncated"] == rows["tflite"]["truncated"] == 0
    assert rows["tflite"]["token_ids_match"]
    assert 0 < rows["tflite"]["compared"] and rows["tflite"]["max_abs_diff"] < 1e-4


def test_cli_errors_name_the_export_directory(tmp_path, capsys):
    from keras_bert_lite import cli

    assert cli.main(["verify", "--export", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]
    assert cli.main(["verify", "--export", str(tmp_path)]) == 2
    assert "export.json" in capsys.readouterr().err


def test_cli_export_then_verify(exported, tmp_path, capsys):
    from keras_bert_lite import cli

    run, _ = exported
    out = tmp_path / "out"
    args = ["export", "--model", run, "--format", "tflite", "--quantize", "dynamic"]
    assert cli.main([*args, "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == [
        "export.json",
        "model.dynamic.tflite",
        "model.tflite",
        "model_ids.tflite",
    ]
    report = tmp_path / "report.json"
    args = ["verify", "--export", str(out), "--limit", "8", "--json", str(report)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "tflite_dynamic" in printed and "p95 ms" in printed
    rows = json.loads(report.read_text())["formats"]
    assert rows["tflite"]["max_abs_diff"] <= 1e-4 and rows["tflite"]["token_ids_match"]
    assert (
        cli.main(
            [
                "export",
                "--model",
                run,
                "--format",
                "onnx",
                "--quantize",
                "int8",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "--quantize" in capsys.readouterr().err


@pytest.mark.slow
def test_tagging_and_qa_exports_decode_in_graph(tmp_path):
    """Tagging: per-piece tags with the character spans the run's tokenizer gives;
    QA: the in-graph answer equals `tasks.decode_squad` on single-window questions."""
    import math

    import tensorflow as tf

    from keras_bert_lite import run as run_dir
    from keras_bert_lite.data import tasks
    from keras_bert_lite.export import load_source, saved_model, tflite
    from keras_bert_lite.text import learn_vocabulary
    from keras_bert_lite.training.finetune import finetune
    from tests.conftest import shared_file
    from tests.test_finetune import _slice_conll, _slice_squad

    tag_train, tag_dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    _slice_conll(shared_file("ner", "en", "wnut16.train.conll"), tag_train, 240)
    _slice_conll(shared_file("ner", "en", "wnut16.dev.conll"), tag_dev, 60)
    qa_train, qa_dev = tmp_path / "train.json", tmp_path / "dev.json"
    _slice_squad(shared_file("qa", "zh", "msra_mrc.train.json"), qa_train, 60)
    _slice_squad(shared_file("qa", "zh", "msra_mrc.dev.json"), qa_dev, 30)
    sentences = [" ".join(w) for w, _ in tasks.read_conll(str(tag_train))]
    for ex in tasks.read_squad(str(qa_train)):
        sentences += [ex.question, ex.context]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(learn_vocabulary(sentences, 1500)) + "\n")
    runs = {}
    for task, train, dev, seq_len in (
        ("tag", tag_train, tag_dev, 64),
        ("qa", qa_train, qa_dev, 128),
    ):
        runs[task] = str(tmp_path / task)
        finetune(
            task,
            str(train),
            str(dev),
            runs[task],
            init="random",
            model="tiny",
            vocab=str(vocab),
            seq_len=seq_len,
            batch_size=16,
            epochs=1,
            doc_stride=48,
            log=lambda s: None,
            verbose=0,
        )

    texts = AWKWARD + ["Héllo @John visited New York 😀 today", "ÀÉÎ façade 中国人"]
    served = tf.saved_model.load(saved_model(runs["tag"], str(tmp_path / "tag_out")))
    out = served.signatures["serving_default"](text=tf.constant(texts))
    tokenizer = run_dir.load_tokenizer(runs["tag"])
    ids, begin, end = tokenizer.tokenize_with_offsets(texts)
    for i, text in enumerate(texts):
        n = min(len(ids[i]), 62)
        chars = tasks._bytes_to_chars(text, begin[i].numpy()[:n], end[i].numpy()[:n])
        np.testing.assert_array_equal(out["start"].numpy()[i, 1 : n + 1], chars[0])
        np.testing.assert_array_equal(out["end"].numpy()[i, 1 : n + 1], chars[1])
        assert (out["tags"].numpy()[i, n + 1 :] == b"").all()
    labels = tasks.read_labels(os.path.join(runs["tag"], "labels.txt"))
    pieces = out["start"].numpy() >= 0
    assert set(out["tags"].numpy()[pieces].tolist()) <= {t.encode() for t in labels}
    assert (out["tags"].numpy()[~pieces] == b"").all()
    tagger = tflite(runs["tag"], str(tmp_path / "tag_out"))
    # The SavedModel's entities (all windows, decoded in its graph) are the run's;
    # the .tflite file's (every window's probabilities and byte offsets, decoded
    # by kbl) are the same wherever tokenizing the whole text gives the pieces of
    # the run's words (the file cannot tokenize word by word); all are the texts'
    # own substrings.
    from keras_bert_lite.export.predict import predict as predict_exported
    from keras_bert_lite.training.finetune import predict

    from_saved = predict_exported(
        str(tmp_path / "tag_out" / "saved_model" / "1"), texts
    )
    assert from_saved == predict(runs["tag"], texts)
    from_tflite = predict_exported(tagger, texts)
    same = []
    for i, (text, row, saved) in enumerate(
        zip(texts, from_tflite, from_saved, strict=True)
    ):
        assert "truncated_at" not in row
        words = [text[s:e] for s, e in tasks.words_with_offsets(text)]
        pieces = tokenizer(words).to_list() if words else []
        by_word = [p for w in pieces for p in (w or [tasks.UNK_ID])]
        if by_word == tokenizer([text])[0].numpy().tolist():
            assert row == saved, text
            same.append(i)
    assert 2 in same and len(same) >= len(texts) - 2, same  # 2: 1,000s of pieces
    for row in from_saved:
        for entity in row["entities"]:
            assert row["text"][entity["start"] : entity["end"]] == entity["text"]

    source = load_source(runs["qa"])
    source.options["null_threshold"] = 1e9  # always answer, to compare spans
    served = tf.saved_model.load(saved_model(source, str(tmp_path / "qa_out")))
    examples = tasks.read_squad(str(qa_dev))
    # And a context several windows long.
    long = "".join(ex.context for ex in examples[:12])
    examples.append(tasks.QAExample("long", examples[0].question, long))
    features = tasks.encode_squad(examples, source.tokenizer, 128, 48, 64)
    logits = source.model.predict(features.inputs(), verbose=0)
    expected = tasks.decode_squad(
        features,
        logits["start_logits"],
        logits["end_logits"],
        examples,
        null_threshold=math.inf,
    )
    single = [
        e for e in range(len(examples)) if (features.example_index == e).sum() == 1
    ]
    assert 10 <= len(single) < len(examples)
    # The SavedModel answers every question as the run does, from every window.
    out = served.signatures["serving_default"](
        question=tf.constant([ex.question for ex in examples]),
        context=tf.constant([ex.context for ex in examples]),
    )
    for i, ex in enumerate(examples):
        want = expected[ex.id]
        got = (
            out["answer"].numpy()[i].decode(),
            int(out["start"][i]),
            int(out["end"][i]),
        )
        assert got == (want["text"], want["start"], want["end"])
    qa_tflite = tflite(source, str(tmp_path / "qa_out"))
    runner = _tflite_runner(qa_tflite)
    first = [int(np.flatnonzero(features.example_index == e)[0]) for e in single]
    got = runner(
        question=_strings([examples[e].question for e in single]),
        context=_strings([examples[e].context for e in single]),
    )
    np.testing.assert_array_equal(got["token_ids"], features.token_ids[first])
    # The .tflite file windows every context as the run does (the long one is 12
    # windows), and kbl decodes its windows to the run's answers.
    from_tflite = predict_exported(
        qa_tflite,
        [ex.question for ex in examples],
        contexts=[ex.context for ex in examples],
    )
    assert [(r["text"], r["start"], r["end"]) for r in from_tflite] == [
        tuple(expected[ex.id][k] for k in ("text", "start", "end")) for ex in examples
    ]
    # kbl predict reads the SavedModel's answers.
    from_saved = predict_exported(
        str(tmp_path / "qa_out" / "saved_model" / "1"),
        [examples[e].question for e in single],
        contexts=[examples[e].context for e in single],
    )
    assert [(r["text"], r["start"], r["end"]) for r in from_saved] == [
        tuple(expected[examples[e].id][k] for k in ("text", "start", "end"))
        for e in single
    ]


def test_verify_gives_a_record_word_the_entity_its_raw_text_words_found():
    """kbl verify feeds a tagging record as raw text, whose words can be finer than
    the record's ("Mary's." is "Mary's" and "."): an entity over part of a record
    word is that word's. It used to need the whole word, and scored it missed."""
    from keras_bert_lite.data import tasks
    from keras_bert_lite.export.verification import _word_tags

    words = ["Mary's.", "home", "in", "(New", "York)", "U.S."]
    text, spans = tasks.join_words_with_offsets(words)
    found = [text[s:e] for s, e in tasks.words_with_offsets(text)]
    assert found == ["Mary's", ".", "home", "in", "(", "New", "York", ")", "U.S."]

    def entity(kind, first, last):
        start, end = text.index(first), text.index(last) + len(last)
        return {"type": kind, "start": start, "end": end}

    entities = [entity("PER", "Mary's", "Mary's"), entity("LOC", "New", "York")]
    entities.append(entity("LOC", "U.S.", "U.S."))
    assert _word_tags(spans, entities, "BIO") == [
        *("B-PER", "O", "O", "B-LOC", "I-LOC", "B-LOC"),
    ]
    assert _word_tags(spans, entities, "BIOES") == [
        *("S-PER", "O", "O", "B-LOC", "E-LOC", "S-LOC"),
    ]
