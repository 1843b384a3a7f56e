"""A QA model's start/end logits over every window of each context -> one answer
per question, inside a TensorFlow graph, decoded as `tasks.decode_squad` decodes
the run's.

The raw-text SavedModel serves these, so that a TF Serving client gets the run's
answer, from any window of a long context, without any kbl code: per window the
`n_best` starts (context pieces whose most-context window it is) and ends
(context pieces), paired up to `max_answer_len` pieces; the best pair over the
question's windows (the earlier window on a tie), unless the null score (start +
end logit at [CLS], the lowest over the windows) beats it by more than the
threshold.

B = questions, R = windows, T = seq_len, N = n_best.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_bert_lite.export.text_graph import QuestionWindows


def decode(
    contexts,
    windows: QuestionWindows,
    start_logits,
    end_logits,
    null_threshold: float,
    n_best: int = 20,
    max_answer_len: int = 30,
) -> dict:
    """The answers, as `tasks.decode_squad` gives them.

    Args:
        contexts: [B] strings.
        windows: the `QuestionWindows` the logits come from.
        start_logits, end_logits: float32 [R, T].
        null_threshold: the margin by which the null score must beat the best
            span for "no answer".
        n_best, max_answer_len: candidates per side and window; longest answer
            in pieces.

    Returns:
        `answer` string [B], character `start`/`end` int32 [B] (-1 for no answer),
        `score` float32 [B] (the best span's, or the null score).
    """
    never = tf.constant(-np.inf, tf.float32)
    in_context = windows.piece_begin >= 0  # [R, T]
    k = min(n_best, int(start_logits.shape[1]))
    # top_k puts the lower position first on a tie, as a stable sort does.
    starts_score, starts = tf.math.top_k(
        tf.where(in_context & windows.max_context, start_logits, never), k
    )
    ends_score, ends = tf.math.top_k(tf.where(in_context, end_logits, never), k)
    span = ends[:, None, :] - starts[:, :, None]  # [R, N, N]
    scores = starts_score[:, :, None] + ends_score[:, None, :]
    scores = tf.where((span >= 0) & (span < max_answer_len), scores, never)
    flat = tf.reshape(scores, [-1, k * k])
    pick = tf.argmax(flat, -1, tf.int32)  # the first best, as np.argmax
    row_best = tf.reduce_max(flat, -1)  # [R]
    row_start = tf.gather(starts, pick // k, batch_dims=1)
    row_end = tf.gather(ends, pick % k, batch_dims=1)

    # Over each question's windows: the first with the best finite score.
    text, batch = windows.text, tf.shape(windows.count)[0]
    rows = tf.range(tf.shape(text)[0])
    best = tf.math.unsorted_segment_max(row_best, text, batch)  # [B]
    first = tf.where(
        tf.math.is_finite(row_best) & (row_best == tf.gather(best, text)),
        rows,
        tf.int32.max,
    )
    row = tf.math.unsorted_segment_min(first, text, batch)
    found = row < tf.int32.max
    row = tf.where(found, row, 0)
    null = tf.math.unsorted_segment_min(
        start_logits[:, 0] + end_logits[:, 0], text, batch
    )
    margin = tf.cast(null, tf.float64) - tf.cast(best, tf.float64)
    answered = found & ~(margin > null_threshold)
    start = tf.gather_nd(
        windows.piece_begin, tf.stack([row, tf.gather(row_start, row)], -1)
    )
    end = tf.gather_nd(windows.piece_end, tf.stack([row, tf.gather(row_end, row)], -1))
    start, end = tf.where(answered, start, -1), tf.where(answered, end, -1)
    answer = tf.strings.substr(
        contexts, tf.maximum(start, 0), tf.maximum(end - start, 0), unit="UTF8_CHAR"
    )
    return {
        "answer": tf.where(answered, answer, ""),
        "start": start,
        "end": end,
        "score": tf.where(answered, best, null),
    }
