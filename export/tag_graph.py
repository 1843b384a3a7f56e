"""A tagger's per-piece probabilities -> the run's words, tags and entities, inside a
TensorFlow graph, decoded as `kbl predict` decodes a run's (`training.finetune`).

The raw-text SavedModel serves these, so that a TF Serving client gets the entities
the run gives without any kbl code: the run's words (`tasks.words_with_offsets`:
runs of non-space characters, each CJK character one), each scored at its first
piece, and the tag sequence the scheme allows with the highest score, a CRF's
learned transitions added (`tasks.viterbi_decode`). Scores are float64, as in
Python, so that near ties break the same way.

B = batch, C = characters, T = seq_len, W = words, E = entities, K = tags.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_bert_lite.data import tasks
from keras_bert_lite.export import text_graph

_FAR = 2**30  # past any character offset: padding for sorted offset tables
_FORBIDDEN = -1e9  # as `tasks.viterbi_decode`


def viterbi(scores, lengths, labels: Sequence[str], scheme: str, crf=None):
    """The best tag sequences the scheme allows, as `tasks.viterbi_decode` per row.

    Args:
        scores: float64 [B, W, K] per-word scores.
        lengths: int32 [B]: each row's number of words (the rest is padding).
        labels, scheme: the tags and their scheme ("BIO" or "BIOES").
        crf: a CRF's learned (start (K,), transitions (K, K), end (K,)) scores, or
            None.

    Returns:
        int32 [B, W] tag ids, -1 past each row's length.
    """
    start, trans, end = tasks.allowed_transitions(labels, scheme)
    k = len(labels)
    lengths = tf.convert_to_tensor(lengths, tf.int32)
    learned = crf or (np.zeros(k), np.zeros((k, k)), np.zeros(k))
    start_score = tf.constant(np.where(start, learned[0], _FORBIDDEN), tf.float64)
    penalty = tf.constant(np.where(trans, learned[1], _FORBIDDEN), tf.float64)
    end_score = tf.constant(np.where(end, learned[2], _FORBIDDEN), tf.float64)
    # Two words of padding: the scans below have a step even without words (a
    # graph cannot stack an empty scan's outputs).
    steps = tf.transpose(tf.pad(scores, [[0, 0], [0, 2], [0, 0]]), [1, 0, 2])
    width = tf.shape(steps)[0]  # W + 2
    identity = tf.broadcast_to(tf.range(k, dtype=tf.int32), tf.shape(steps[0]))

    def forward(carry, inputs):
        score, _ = carry
        emission, t = inputs
        candidates = score[:, :, None] + penalty[None]  # [B, previous, current]
        # Past a row's last word the score stays and the path goes straight back.
        live = (t < lengths)[:, None]
        return (
            tf.where(live, tf.reduce_max(candidates, 1) + emission, score),
            tf.where(live, tf.argmax(candidates, 1, tf.int32), identity),
        )

    first = steps[0] + start_score
    scores_after, back = tf.scan(
        forward, (steps[1:], tf.range(1, width)), initializer=(first, identity)
    )
    last = tf.argmax(scores_after[-1] + end_score, -1, tf.int32)  # [B]
    earlier = tf.scan(
        lambda tag, pointers: tf.gather(pointers, tag, batch_dims=1),
        back,
        initializer=last,
        reverse=True,
    )  # [W + 1, B]: word t's tag
    tags = tf.transpose(earlier)[:, :-1]  # [B, W]
    return tf.where(tf.range(width - 2)[None, :] < lengths[:, None], tags, -1)


def decode(
    texts,
    piece_start,
    piece_end,
    probabilities,
    labels: Sequence[str],
    scheme: str,
    seq_len: int | None,
    crf=None,
) -> dict:
    """The run's entities from a raw-text tagger's outputs, as `kbl predict`
    decodes an export's (`export.predict`).

    Args:
        texts: [B] strings.
        piece_start, piece_end: int32 [B, T] each piece's character span in its
            text, -1 at [CLS], [SEP] and padding (the pieces sit at 1 .. n).
        probabilities: [B, T, K] per-piece tag probabilities.
        labels, scheme, crf: as `viterbi`.
        seq_len: T, where a text with seq_len - 2 pieces was cut there; None
            where every piece of every text is given (windows merged).

    Returns:
        `entity_type`, `entity_text` string [B, E], `entity_start`, `entity_end`
        int32 [B, E] (character offsets; "" and -1 past a text's entities);
        `word_tags` string [B, W] and `word_spans` int32 [B, W, 2]: each word read
        and its tag; with a `seq_len`, `truncated_at` int32 [B]: the character
        after the last word tagged in a text cut at seq_len - 2 pieces, -1 for
        texts read to the end.
    """
    # One more position, past every piece: the tables below are never empty.
    piece_start = tf.pad(piece_start, [[0, 0], [0, 1]], constant_values=-1)
    probabilities = tf.pad(probabilities, [[0, 0], [0, 1], [0, 0]])
    starts, ends = text_graph.word_spans(texts)  # [B, W]
    is_word = starts >= 0
    num_words = tf.reduce_sum(tf.cast(is_word, tf.int32), 1)
    is_piece = piece_start >= 0
    num_pieces = tf.reduce_sum(tf.cast(is_piece, tf.int32), 1)
    read = is_word
    if seq_len is not None:
        # A full window: the words from the end of its last piece on are not read.
        last_piece_end = tf.gather(piece_end, num_pieces, batch_dims=1)
        full = (num_pieces >= seq_len - 2) & (num_words > 0)
        read = is_word & (~full[:, None] | (starts < last_piece_end[:, None]))
    lengths = tf.reduce_sum(tf.cast(read, tf.int32), 1)
    last_word_end = tf.gather(ends, tf.maximum(lengths - 1, 0), batch_dims=1)
    truncated_at = tf.where(
        lengths < num_words, tf.where(lengths > 0, last_word_end, 0), -1
    )
    # A word's score: the log-probabilities at its first piece, zeros without one.
    table = tf.where(is_piece, piece_start, _FAR)[:, 1:]  # [B, T], ascending
    first = text_graph.searchsorted(table, starts)
    first = tf.minimum(first, tf.shape(table)[1] - 1)
    has_piece = read & (tf.gather(table, first, batch_dims=1) < ends)
    log_p = tf.math.log(tf.maximum(tf.cast(probabilities, tf.float64), 1e-30))
    scores = tf.gather(log_p, first + 1, batch_dims=1)  # [B, W, K]
    scores = tf.where(has_piece[..., None], scores, tf.zeros_like(scores))
    tags = viterbi(scores, lengths, labels, scheme, crf)
    spans = {"start": starts, "end": ends}
    entities = _entities(texts, tags, spans, labels)
    tagged = tags >= 0
    entities["word_tags"] = tf.where(
        tagged, tf.gather(tf.constant(list(labels)), tf.maximum(tags, 0)), ""
    )
    entities["word_spans"] = tf.stack(
        [tf.where(tagged, starts, -1), tf.where(tagged, ends, -1)], -1
    )
    if seq_len is not None:
        entities["truncated_at"] = truncated_at
    return entities


def _entities(texts, tags, spans: dict, labels: Sequence[str]) -> dict:
    """The entities of well-formed tag paths [B, W] (a constrained Viterbi's): each
    begins at a B- or S- tag and takes in the words up to the next O, B- or S-."""
    kinds = sorted({tag[2:] for tag in labels if tag != "O"})
    kind_of = tf.constant(
        [kinds.index(tag[2:]) if tag != "O" else -1 for tag in labels], tf.int32
    )
    begins_of = tf.constant([tag[:2] in ("B-", "S-") for tag in labels])
    safe = tf.maximum(tags, 0)
    member = (tags >= 0) & (tf.gather(kind_of, safe) >= 0)
    begins = member & tf.gather(begins_of, safe)
    count = tf.reduce_sum(tf.cast(begins, tf.int32), 1)  # [B]
    width = tf.reduce_max(tf.concat([count, [0]], 0))  # E
    batch = tf.shape(tags)[0]
    index = tf.cumsum(tf.cast(begins, tf.int32), 1) - 1  # each word's entity
    # Words outside entities go to one extra segment, dropped.
    segment = tf.where(
        member & (index >= 0), tf.range(batch)[:, None] * width + index, batch * width
    )

    def per_entity(reduce, values):
        return tf.reshape(reduce(values, segment, batch * width + 1)[:-1], [-1, width])

    real = tf.range(width)[None, :] < count[:, None]  # [B, E]
    start = tf.where(real, per_entity(tf.math.unsorted_segment_min, spans["start"]), -1)
    end = tf.where(real, per_entity(tf.math.unsorted_segment_max, spans["end"]), -1)
    kind = per_entity(
        tf.math.unsorted_segment_max,
        tf.where(begins, tf.gather(kind_of, safe), -1),
    )
    text = tf.strings.substr(
        tf.broadcast_to(texts[:, None], tf.shape(start)),
        tf.maximum(start, 0),
        tf.maximum(end - start, 0),
        unit="UTF8_CHAR",
    )
    return {
        "entity_type": tf.where(
            real, tf.gather(tf.constant(kinds or [""]), tf.maximum(kind, 0)), ""
        ),
        "entity_start": start,
        "entity_end": end,
        "entity_text": tf.where(real, text, ""),
    }
