"""Signature plumbing shared by the exporters.

SavedModel and TFLite name a signature's inputs after the Python parameters of the
function behind it, so every exported function is given parameters named as the
inputs users pass (`text`, `text_pair`, `question`, `context`, or the id inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

ID_INPUTS = ("token_ids", "segment_ids", "padding_mask")


def ids_call(source):
    """The function behind every ids model: the three int32 [B, T] id inputs -> the
    Keras model's outputs (`source.output_names`), in float32 whatever the policy."""
    import tensorflow as tf

    model = source.model

    def call(token_ids, segment_ids, padding_mask):
        outputs = model(
            {
                "token_ids": token_ids,
                "segment_ids": segment_ids,
                "padding_mask": padding_mask,
            },
            training=False,
        )
        return {k: tf.cast(outputs[k], tf.float32) for k in source.output_names}

    return call


def with_parameters(fn, names: Sequence[str]):
    """`fn` as a function whose parameters are `names`: SavedModel takes signature
    input names from the parameter names."""
    names = tuple(names)
    if names == ("text",):

        def text_only(text):
            return fn(text)

        return text_only
    if names == ("text", "text_pair"):

        def text_and_pair(text, text_pair):
            return fn(text, text_pair)

        return text_and_pair
    if names == ("question", "context"):

        def question_and_context(question, context):
            return fn(question, context)

        return question_and_context
    if names == ID_INPUTS:

        def ids(token_ids, segment_ids, padding_mask):
            return fn(token_ids, segment_ids, padding_mask)

        return ids
    raise ValueError(f"no signature with inputs {names}")
