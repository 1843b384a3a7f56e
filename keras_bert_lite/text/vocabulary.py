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
    and a byte-order mark dropped); KblError naming the file when it is missing or
    not UTF-8."""
    try:
        with open(path, encoding="utf-8-sig") as f:
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
    """Learns a WordPiece vocabulary of about `size` tokens from sentences (fewer
    where the corpus has no more: every character is kept, a longer piece needs
    about 10 occurrences).

    The learner pre-tokenizes the way the tokenizer does (punctuation split, every CJK
    character its own word, lower case and accents stripped unless `lowercase=False`),
    counts words, and keeps the special tokens first. Unlike tensorflow-text's
    bert_vocab_from_dataset, it spends no token on a `##` continuation of a character
    that always stands alone (CJK characters, punctuation).

    Args:
        sentences: strings, streamed (the learner keeps word counts, not the text).
        size: target vocabulary size, special tokens included.
        lowercase: uncased vocabulary when True.
        max_words: the most distinct words (the most frequent) that learning reads.

    Returns:
        The tokens, `[PAD] [UNK] [CLS] [SEP] [MASK]` first.
    """
    import tensorflow as tf
    from tensorflow_text.python.ops.bert_tokenizer import BasicTokenizer
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib

    from keras_bert_lite.text.tokenizer import SPECIAL_TOKENS

    learner = wordpiece_tokenizer_learner_lib
    smallest = len(SPECIAL_TOKENS) + 11
    if size < smallest:
        raise KblError(
            f"vocabulary size {size} is too small: it takes at least {smallest} (the "
            f"{len(SPECIAL_TOKENS)} special tokens and some characters); a useful one "
            "has thousands (default 8192)"
        )
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
    # The words as the learner of tensorflow-text's bert_vocab_from_dataset counts
    # them: the tokenizer's split (punctuation, each CJK character a word).
    basic = BasicTokenizer(lower_case=lowercase)
    try:
        counts = learner.count_words(dataset.map(basic.tokenize))
    except StopIteration:  # count_words looks at its first word, and there is none
        counts = {}
    if failed:
        raise failed[0]
    if not counts:
        raise KblError("the corpus gave no words to learn a vocabulary from")
    reserved = list(SPECIAL_TOKENS)
    # Chinese needs room for thousands of single characters; the default of 1000
    # unique characters would turn the rarer ones into [UNK].
    max_unique_chars = max(1000, size // 2)
    alphabet = learner.get_allowed_chars(
        learner.get_input_words(counts.items(), reserved, _MAX_TOKEN_LENGTH),
        max_unique_chars,
    )
    # The learner adds "##c" for every character c of its alphabet, but a character
    # the tokenizer always splits off (a CJK character, punctuation) starts a word
    # and never continues one: its "##c" is never used. On Chinese text that is half
    # the vocabulary. They are left out, and their number added to the learner's
    # target so that the vocabulary keeps its size in live tokens.
    dead = {"##" + c for c in _split_off(basic, sorted(alphabet))}
    vocab = learner.learn(
        counts,
        size + len(dead),
        reserved,
        max_input_tokens=max_words,
        max_token_length=_MAX_TOKEN_LENGTH,
        max_unique_chars=max_unique_chars,
    )
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise KblError("the corpus gave no words to learn a vocabulary from")
    # Without the dead twins; the learner may also echo a reserved token among the
    # learned ones, of which the first is kept.
    seen: set[str] = set(dead)
    return [t for t in vocab if not (t in seen or seen.add(t))]


_MAX_TOKEN_LENGTH = 50  # the learner's default: longer words are not counted


def _split_off(basic, chars: list[str]) -> list[str]:
    """The characters that the tokenizer makes a word of their own wherever they
    stand ("x" + c + "x" -> three words)."""
    if not chars:
        return []
    words = basic.tokenize([f"x{c}x" for c in chars])
    return [
        c for c, n in zip(chars, words.row_lengths().numpy(), strict=True) if n == 3
    ]
