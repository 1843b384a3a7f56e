"""The CRF's loss against brute force over every tag sequence, and Viterbi decoding
with learned transitions against the best-scoring sequence."""

import itertools

import numpy as np
import pytest


def _path_score(emissions, tags, start, transitions, end):
    score = (
        start[tags[0]]
        + end[tags[-1]]
        + sum(emissions[i, t] for i, t in enumerate(tags))
    )
    return score + sum(transitions[a, b] for a, b in itertools.pairwise(tags))


def _brute_force_nll(emissions, labels, weights, start, transitions, end):
    """-log p(gold) by enumerating every sequence over the labelled positions."""
    rows = []
    for e, y, w in zip(emissions, labels, weights, strict=True):
        kept = np.flatnonzero(w > 0)
        if not len(kept):
            rows.append(0.0)
            continue
        e = e[kept]
        scores = [
            _path_score(e, tags, start, transitions, end)
            for tags in itertools.product(range(e.shape[1]), repeat=len(kept))
        ]
        log_z = np.logaddexp.reduce(scores)
        rows.append(log_z - _path_score(e, y[kept], start, transitions, end))
    return np.array(rows)


@pytest.mark.parametrize("t", [1, 2, 6, 9])
def test_crf_loss_equals_brute_force_over_all_tag_sequences(t):
    """Both ways of running the forward algorithm: pairwise step-matrix products
    for a static length (what XLA compiles), and a loop for a length known only
    at run time."""
    import tensorflow as tf

    from keras_bert_lite.layers import CRF

    rng = np.random.default_rng(t)
    c = 3
    layer = CRF(c)
    layer.build()
    start, transitions, end = (rng.normal(size=s) for s in ((c,), (c, c), (c,)))
    layer.start_transitions.assign(start)
    layer.transitions.assign(transitions)
    layer.end_transitions.assign(end)
    emissions = rng.normal(size=(4, t, c)).astype("float32")
    labels = rng.integers(0, c, size=(4, t)).astype("int32")
    # Word pieces after the first and padding carry weight 0: gaps in the chain.
    weights = (rng.random((4, t)) < 0.6).astype("float32")
    weights[0], weights[3] = 1, 0
    expected = _brute_force_nll(emissions, labels, weights, start, transitions, end)
    got = np.asarray(layer.negative_log_likelihood(emissions, labels, weights))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got[3] == 0.0 and (got[0] > 0)

    unknown_length = tf.function(
        layer.negative_log_likelihood,
        input_signature=[
            tf.TensorSpec([None, None, c], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.float32),
        ],
    )
    got = unknown_length(emissions, labels, weights).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_crf_loss_and_gradients_compile_with_xla():
    """The fine-tuning step is XLA-compiled: the loss at seq_len 64 and its
    gradients compile (in seconds: an unrolled loop took minutes) and agree with
    the uncompiled ones."""
    import tensorflow as tf

    from keras_bert_lite.layers import CRF

    rng = np.random.default_rng(0)
    b, t, c = 4, 64, 5
    layer = CRF(c)
    layer.build()
    layer.transitions.assign(rng.normal(size=(c, c)))
    emissions = tf.constant(rng.normal(size=(b, t, c)).astype("float32"))
    labels = tf.constant(rng.integers(0, c, (b, t)).astype("int32"))
    weights = tf.constant((rng.random((b, t)) < 0.7).astype("float32"))

    def loss_and_gradients(emissions):
        with tf.GradientTape() as tape:
            tape.watch(emissions)
            loss = tf.reduce_sum(
                layer.negative_log_likelihood(emissions, labels, weights)
            )
        return loss, tape.gradient(loss, [emissions, layer.transitions])

    plain = loss_and_gradients(emissions)
    compiled = tf.function(loss_and_gradients, jit_compile=True)(emissions)
    np.testing.assert_allclose(compiled[0], plain[0], rtol=1e-5)
    for got, want in zip(compiled[1], plain[1], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # Each labelled position's tag marginals sum to 1, so its gradient sums to 0.
    np.testing.assert_allclose(tf.reduce_sum(compiled[1][0], -1), 0, atol=1e-5)


def test_viterbi_with_transition_scores_finds_the_best_allowed_sequence():
    from keras_bert_lite.data.tasks import allowed_transitions, viterbi_decode

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    allowed = allowed_transitions(labels, "BIO")
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 6))
        emissions = rng.normal(size=(n, len(labels)))
        scores = tuple(rng.normal(size=m.shape) for m in allowed)
        best = viterbi_decode(emissions, *allowed, transition_scores=scores)

        def total(tags, emissions=emissions, scores=scores):
            if not allowed[0][tags[0]] or not allowed[2][tags[-1]]:
                return -np.inf
            if any(not allowed[1][a, b] for a, b in itertools.pairwise(tags)):
                return -np.inf
            return _path_score(emissions, tags, *scores)

        candidates = list(itertools.product(range(len(labels)), repeat=n))
        want = max(candidates, key=total)
        assert total(tuple(best)) == pytest.approx(total(want))


def test_crf_tagger_round_trips_through_its_config():
    from keras_bert_lite.models import BertBackbone, BertTokenClassifier

    backbone = BertBackbone.from_preset("tiny", vocabulary_size=50)
    model = BertTokenClassifier(backbone, 5, crf=True)
    again = BertTokenClassifier.from_config(model.get_config())
    assert again.crf and again.crf_layer is not None
    assert {w.path for w in again.weights} == {w.path for w in model.weights}
