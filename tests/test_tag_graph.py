"""In-graph tagging decode (`export.tag_graph`, what the raw-text SavedModel serves)
against the Python decoding of `kbl predict`: the same words, the same Viterbi
paths (ties and a CRF's transitions included), the same entities and the same
`truncated_at`, on real tweets and Chinese news, with no model trained."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from tests.conftest import shared_file

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIOES = ["O", "B-X", "I-X", "E-X", "S-X", "B-geo-loc", "I-geo-loc", "E-geo-loc"]
BIOES += ["S-geo-loc"]

TRICKY = [
    "",
    "   ",
    "Alice , Bob (and 李白) met in Paris... ok",
    "a\u00a0b\u3000c\td\u2028e\x1cf\x85g",
    "中国人民x中 y丽",
    "Héllo @John 😀 façade e\u0301",
    "\u4dc0\u3400\u9fff\uf900\ufaff\U00020000x",
    "control\x00char\u200bhere",
    "(\"Paris\"), U.S., a.m.) etc. «Zürich»; ¿Qué? :) ... x' '' '. a.b..",
    "李白说“北京”很好，“好”。",
]


def test_the_words_are_the_runs_words():
    import tensorflow as tf

    from keras_bert_lite.data import tasks
    from keras_bert_lite.export import text_graph

    starts, ends = text_graph.word_spans(tf.constant(TRICKY))
    for i, text in enumerate(TRICKY):
        spans = np.stack([starts[i], ends[i]], -1).tolist()
        assert [tuple(s) for s in spans if s[0] >= 0] == tasks.words_with_offsets(text)
    # Every character the run's word pattern splits on, and only those.
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert text_graph._spaces() == tuple(map(ord, re.findall(r"\s", every)))


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
@pytest.mark.parametrize("crf", [False, True])
def test_viterbi_paths_are_the_runs(scheme, crf):
    import tensorflow as tf

    from keras_bert_lite.data import tasks
    from keras_bert_lite.export import tag_graph

    labels = BIO if scheme == "BIO" else BIOES
    k = len(labels)
    rng = np.random.default_rng(0)
    learned = None
    if crf:
        learned = tuple(rng.normal(0, 3, shape) for shape in ((k,), (k, k), (k,)))
    lengths = rng.integers(0, 13, 40)
    scores = np.log(rng.dirichlet(np.full(k, 0.5), (40, 12)))
    scores[:5] = np.round(scores[:5])  # ties, broken as NumPy breaks them
    got = tag_graph.viterbi(
        tf.constant(scores), tf.constant(lengths, tf.int32), labels, scheme, learned
    ).numpy()
    masks = tasks.allowed_transitions(labels, scheme)
    for row, n, scored in zip(got, lengths, scores, strict=True):
        assert row[:n].tolist() == tasks.viterbi_decode(scored[:n], *masks, learned)
        assert (row[n:] == -1).all()
    # In a graph too, as the SavedModel runs it, with no words or no texts at all.
    traced = tf.function(
        lambda scores, lengths: tag_graph.viterbi(
            scores, lengths, labels, scheme, learned
        ),
        input_signature=[
            tf.TensorSpec([None, None, k], tf.float64),
            tf.TensorSpec([None], tf.int32),
        ],
    )
    for batch in (2, 0):
        empty = traced(tf.zeros([batch, 0, k], tf.float64), tf.zeros([batch], tf.int32))
        assert empty.shape == (batch, 0)
    one = traced(tf.constant(scores[:3]), tf.constant(lengths[:3], tf.int32))
    np.testing.assert_array_equal(one, got[:3])


# Both schemes and both decoders once each (the Viterbi test above takes all four).
@pytest.mark.parametrize("scheme, crf", [("BIO", True), ("BIOES", False)])
def test_entities_are_what_kbl_predict_decodes(scheme, crf):
    """Random per-piece probabilities on WNUT-16 tweets and MSRA sentences,
    tokenized and packed as the export packs them (seq_len 32: many are cut)."""
    import tensorflow as tf

    from keras_bert_lite.data import tasks
    from keras_bert_lite.export import tag_graph, text_graph
    from keras_bert_lite.export.predict import _entities, _served_entities
    from keras_bert_lite.text import learn_vocabulary
    from keras_bert_lite.text.tokenizer import BertTokenizer

    english = tasks.read_conll(shared_file("ner", "en", "wnut16.dev.conll"))
    chinese = tasks.read_conll(shared_file("ner", "zh", "msra.dev.conll"))
    texts = [tasks.join_words(w) for w, _ in english[:60] + chinese[:40]] + TRICKY
    tokenizer = BertTokenizer(learn_vocabulary(texts, 600))
    seq_len, labels = 32, BIO if scheme == "BIO" else BIOES
    k = len(labels)
    rng = np.random.default_rng(1)
    learned = None
    if crf:
        learned = tuple(rng.normal(0, 3, shape) for shape in ((k,), (k, k), (k,)))
    strings = tf.constant(texts)
    features = text_graph.encode_single(tokenizer, strings, seq_len, offsets=True)
    start = text_graph.bytes_to_chars(strings, features["piece_begin"])
    end = text_graph.bytes_to_chars(strings, features["piece_end"])
    probabilities = rng.dirichlet(np.full(k, 0.3), (len(texts), seq_len))
    probabilities = probabilities.astype(np.float32)
    out = tag_graph.decode(
        strings, start, end, probabilities, labels, scheme, seq_len, learned
    )
    manifest = {"scheme": scheme, "seq_len": seq_len, "labels": labels}
    if crf:
        names = ("start", "transitions", "end")
        manifest["crf"] = {n: v.tolist() for n, v in zip(names, learned, strict=True)}
    want = _entities(
        texts,
        {"start": start.numpy(), "end": end.numpy(), "probabilities": probabilities},
        labels,
        manifest,
    )
    got = _served_entities(texts, {k: np.asarray(v) for k, v in out.items()})
    assert got == want
    found = cut = 0
    for i, row in enumerate(want):
        # The words read: all of them, or those before truncated_at.
        spans = out["word_spans"][i].numpy()
        read = [tuple(span) for span in spans[spans[:, 0] >= 0].tolist()]
        words = tasks.words_with_offsets(texts[i])
        if "truncated_at" in row:
            words = [w for w in words if w[1] <= row["truncated_at"]]
        assert read == words, texts[i]
        found, cut = found + len(row["entities"]), cut + ("truncated_at" in row)
    assert found > 200 and 20 < cut < len(texts)


def test_window_owners_are_the_runs_and_run_in_litert():
    """Each piece's window (the most context, ties to the earlier window) as the
    run picks it, for windows of tagging's and of QA's shapes, in TF and in a
    .tflite file of TFLite builtins alone, as the raw-text .tflite taggers and QA
    files window long texts."""
    import types

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from keras_bert_lite.data import tasks
    from keras_bert_lite.export import text_graph
    from keras_bert_lite.native_log import native_stderr

    def owners(lengths, size, stride):
        pieces = types.SimpleNamespace(lengths=lengths)
        return dict(
            zip(
                ("row", "index"),
                text_graph.Windows(pieces, size, stride).owners(),
                strict=True,
            )
        )

    specs = [
        tf.TensorSpec([None], tf.int32, name=n) for n in ("lengths", "size", "stride")
    ]
    traced = tf.function(owners, input_signature=specs, autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [traced.get_concrete_function()], tf.Module()
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with native_stderr():
        runner = Interpreter(model_content=converter.convert()).get_signature_runner()
    # Tagging at seq_len 32 and 128, QA at 384 with questions of 1 to 64 pieces
    # (stride 128), where the last window's shorter length can tie a full one.
    shapes = [(30, 15), (126, 63), (254, 127)] + [(381 - q, 128) for q in (1, 17, 64)]
    rng = np.random.default_rng(0)
    lengths = np.concatenate([[0, 1], rng.integers(1, 1200, 16)]).astype(np.int32)
    for size, stride in shapes:
        inputs = [lengths, np.full_like(lengths, size), np.full_like(lengths, stride)]
        graph = {k: v.numpy() for k, v in traced(*inputs).items()}
        lite = runner(**dict(zip(("lengths", "size", "stride"), inputs, strict=True)))
        first_row = np.cumsum([len(tasks._windows(n, size, stride)) for n in lengths])
        for b, n in enumerate(lengths):
            spans = tasks._windows(int(n), size, stride)
            window = tasks._max_context_window(np.arange(n), spans)
            starts = np.asarray([s for s, _ in spans])[window]
            want_row = first_row[b] - len(spans) + window
            for got in (graph, lite):
                np.testing.assert_array_equal(got["row"][b, :n], want_row)
                np.testing.assert_array_equal(
                    got["index"][b, :n], np.arange(n) - starts
                )
