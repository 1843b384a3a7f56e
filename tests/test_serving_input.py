"""Serving input: the SavedModel signatures and the TFLite file answer any text
(empty, whitespace, 100,000 characters, emoji and combining marks, right-to-left,
mixed Chinese and English, control characters) and any batch size (0 to 1,024)
without crashing, with well-formed outputs; packed exactly as training packs.

The exported run is an untrained tiny classifier written directly (no training:
serving behaviour does not depend on the weights), so this module stays cheap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_vocabulary

SEQ_LEN = 24
LABELS = ["neg", "neu", "pos"]

EDGE_CASES = {
    "empty": "",
    "whitespace": " \t\n\r\u3000\u00a0 ",
    "long": ("The film was wonderful, the cast charming. " * 2500)[:100_000],
    "emoji": "Loved it 😀👍🏽👨‍👩‍👧 !!",
    "combining": "e\u0301 a\u0308\u0323 Z\u0335\u0336\u0337a\u0338l\u0339go",
    "rtl": "مرحبا بالعالم — שלום עולם",
    "zh_en": "这部电影很好看 but the ending was dull, 结局很差",
    "control": "a\x00b\x07c\x1b[31m\x7f\u200b\u200d\u202e\ufeff\ufffd end",
    "lone_marks": "\u0301\u0308",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(run, SavedModel signatures, TFLite text runner, TFLite ids runner)."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)

    from keras_bert_lite import run as run_dir
    from keras_bert_lite.config import CONFIG_VERSION, BertConfig, DataConfig
    from keras_bert_lite.export import saved_model, tflite
    from keras_bert_lite.export.to_tflite import interpreter

    root = tmp_path_factory.mktemp("served")
    run = root / "run"
    run.mkdir()
    vocab = tiny_vocabulary()
    (run / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (run / "labels.txt").write_text("\n".join(LABELS) + "\n")
    model = BertConfig.from_preset(
        "tiny", vocabulary_size=len(vocab), max_sequence_length=64
    )
    config = {
        "kbl_run": CONFIG_VERSION,
        "task": "classify",
        "model": model.to_dict(),
        "data": DataConfig(seq_len=SEQ_LEN, nsp=False).to_dict(),
        "task_options": {
            "seq_len": SEQ_LEN,
            "label_kind": "single",
            "num_labels": len(LABELS),
            "pair": False,
            "dropout": 0.1,
        },
    }
    (run / "config.json").write_text(json.dumps(config))
    run_dir.build_model(config).save_weights(str(run / "model.weights.h5"))
    out = root / "out"
    signatures = tf.saved_model.load(
        saved_model(str(run), str(out), warmup=False)
    ).signatures
    text_runner = interpreter(tflite(str(run), str(out))).get_signature_runner()
    ids_runner = interpreter(
        tflite(str(run), str(out), ids_only=True)
    ).get_signature_runner()
    return str(run), signatures, text_runner, ids_runner


def _check_classification(outputs: dict, batch: int) -> None:
    probabilities = np.asarray(outputs["probabilities"])
    assert probabilities.shape == (batch, len(LABELS))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    if "label" in outputs:
        labels = [s.decode() for s in np.asarray(outputs["label"])]
        assert labels == [LABELS[i] for i in probabilities.argmax(-1)]
        assert np.asarray(outputs["labels"]).shape == (batch, len(LABELS))


def _check_packing(token_ids, padding_mask, segment_ids=None) -> None:
    token_ids, padding_mask = np.asarray(token_ids), np.asarray(padding_mask)
    batch = token_ids.shape[0]
    assert token_ids.shape == padding_mask.shape == (batch, SEQ_LEN)
    assert ((token_ids >= 0) & (token_ids < len(tiny_vocabulary()))).all()
    if batch:
        assert (token_ids[:, 0] == 2).all()  # [CLS]
        lengths = padding_mask.sum(-1)
        assert (lengths >= 2).all()  # [CLS] ... [SEP], even for empty text
        assert (token_ids[np.arange(batch), lengths - 1] == 3).all()  # [SEP]
        # The mask is a prefix of ones and padding is [PAD].
        assert (padding_mask == (np.arange(SEQ_LEN) < lengths[:, None])).all()
        assert (token_ids[padding_mask == 0] == 0).all()
    if segment_ids is not None:
        assert (np.asarray(segment_ids) == 0).all()


def _serve_everything(served, texts: list[str]) -> None:
    """Every text entry point on one batch: well-formed, agreeing with each other
    and with the training packer."""
    import tensorflow as tf

    from keras_bert_lite import run as run_dir
    from keras_bert_lite.data import tasks

    run, signatures, text_runner, _ = served
    batch = len(texts)
    strings = tf.constant(texts, tf.string, shape=[batch])
    served_out = signatures["serving_default"](text=strings)
    _check_classification({k: v.numpy() for k, v in served_out.items()}, batch)
    packed = {k: v.numpy() for k, v in signatures["tokenize"](text=strings).items()}
    _check_packing(packed["token_ids"], packed["padding_mask"], packed["segment_ids"])
    lite = text_runner(text=np.array(texts, dtype=object).reshape(batch))
    _check_classification(lite, batch)
    np.testing.assert_array_equal(lite["token_ids"], packed["token_ids"])
    np.testing.assert_allclose(
        lite["probabilities"], served_out["probabilities"].numpy(), atol=1e-4
    )
    if batch:
        expected = tasks.encode_classification(
            [{"text": t} for t in texts], run_dir.load_tokenizer(run), SEQ_LEN
        )
        np.testing.assert_array_equal(packed["token_ids"], expected["token_ids"])


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_text_edge_cases_alone_and_in_a_batch(served, case):
    _serve_everything(served, [EDGE_CASES[case]])
    _serve_everything(served, [EDGE_CASES[case], "the cat", EDGE_CASES[case]])


def test_every_edge_case_in_one_batch(served):
    _serve_everything(served, list(EDGE_CASES.values()))


@pytest.mark.parametrize("batch", [0, 1, 1024])
def test_batch_sizes(served, batch):
    texts = [f"the cat {i} 中国 😀" for i in range(batch)]
    _serve_everything(served, texts)


@pytest.mark.parametrize("batch", [0, 1, 1024])
def test_ids_signatures_take_any_batch(served, batch):
    import tensorflow as tf

    _, signatures, _, ids_runner = served
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, len(tiny_vocabulary()), (batch, SEQ_LEN)).astype("int32")
    inputs = {
        "token_ids": ids,
        "segment_ids": np.zeros_like(ids),
        "padding_mask": np.ones_like(ids),
    }
    by_saved_model = signatures["ids"](**{k: tf.constant(v) for k, v in inputs.items()})
    _check_classification({k: v.numpy() for k, v in by_saved_model.items()}, batch)
    by_tflite = ids_runner(**inputs)
    _check_classification(by_tflite, batch)
    np.testing.assert_allclose(
        by_tflite["probabilities"], by_saved_model["probabilities"].numpy(), atol=1e-4
    )


# Any Unicode text (surrogates cannot be UTF-8 encoded), short and long, with the
# categories tokenizers trip over weighted up: controls, marks, format characters.
ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.characters(categories=["Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"]),
        st.sampled_from(list("the cat 中国人 ##s [CLS][SEP]")),
    ),
    max_size=400,
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(texts=st.lists(ANY_TEXT, min_size=0, max_size=5))
def test_any_text_is_served_and_packed_like_training(served, texts):
    _serve_everything(served, texts)
