"""Learning a WordPiece vocabulary with tensorflow-text's learner."""

from __future__ import annotations

from collections.abc import Iterable

from keras_bert_lite.errors import KblError


def read_vocabulary(path: str) -> list[str]:
    """Reads a vocab.txt (one token per line, id = line number - 1) and checks it
    holds the special tokens first and no duplicates."""
    from keras_bert_lite.text.tokenizer import check_vocabulary

    tokens = read_vocabulary_lines(path)
    check_vocabulary(tokens, where=path)
    return tokens


def read_vocabulary_lines(path: str) -> list[str]:
    """The tokens of a vocab.txt in file order, unchecked (trailing blank lines
    dropped); KblError naming the file when it is missing or not UTF-8."""
    try:
        with open(path, encoding="utf-8") as f:
            tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    except FileNotFoundError:
        raise KblError(f"{path}: vocabulary file not found") from None
    except UnicodeDecodeError as e:
        raise KblError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    while tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def learn_vocabulary(
    sentences: Iterable[str],
    size: int,
    lowercase: bool = True,
    max_words: int = 10_000_000,
) -> list[str]:
    """Learns a WordPiece vocabulary of about `size` tokens from sentences.

    The learner pre-tokenizes the way the tokenizer does (punctuation split, every CJK
    character its own word, lower case and accents stripped unless `lowercase=False`),
    counts words, and keeps the special tokens first.

    Args:
        sentences: strings, streamed (the learner keeps word counts, not the text).
        size: target vocabulary size, special tokens included.
        lowercase: uncased vocabulary when True.
        max_words: stop counting after this many words.

    Returns:
        The tokens, `[PAD] [UNK] [CLS] [SEP] [MASK]` first.
    """
    import tensorflow as tf
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as learner

    from keras_bert_lite.text.tokenizer import SPECIAL_TOKENS

    if size <= len(SPECIAL_TOKENS) + 10:
        raise KblError(f"vocabulary size {size} is too small; use at least 100")
    # A KblError raised while reading (a bad line) would surface from tf.data as an
    # opaque UnknownError; the generator keeps it and it is raised as itself below.
    failed: list[KblError] = []

    def generate():
        try:
            yield from sentences
        except KblError as e:
            failed.append(e)

    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=tf.TensorSpec([], tf.string)
    ).batch(1024)
    vocab = learner.bert_vocab_from_dataset(
        dataset,
        vocab_size=size,
        reserved_tokens=list(SPECIAL_TOKENS),
        bert_tokenizer_params=dict(lower_case=lowercase),
        # Chinese needs room for thousands of single characters; the default of 1000
        # unique characters would turn the rarer ones into [UNK].
        learn_params=dict(
            max_input_tokens=max_words, max_unique_chars=max(1000, size // 2)
        ),
    )
    if failed:
        raise failed[0]
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise KblError("the corpus gave no words to learn a vocabulary from")
    # The learner may echo a reserved token among the learned ones; keep the first.
    seen: set[str] = set()
    return [t for t in vocab if not (t in seen or seen.add(t))]
