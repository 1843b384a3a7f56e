"""BERT tokenizer on tensorflow-text's FastBertTokenizer.

It runs in graph (tf.data, SavedModel) and has TFLite kernels, so the tokenizer that
trains a model is the one that ships inside its exports.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_text as text

from keras_bert_lite.errors import KblError
from keras_bert_lite.text.vocabulary import read_vocabulary

# Fixed ids: [PAD] must be 0 so zero padding and the padding mask agree.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class BertTokenizer(tf.Module):
    """Raw strings -> WordPiece ids (int32 RaggedTensor [batch, (tokens)]).

    Args:
        vocabulary: list of tokens, the first five being `SPECIAL_TOKENS` in order.
        lowercase: uncased tokenizer (lower case, NFD, accents stripped) when True.
    """

    def __init__(self, vocabulary: list[str], lowercase: bool = True):
        super().__init__(name="bert_tokenizer")
        check_vocabulary(vocabulary)
        self.vocabulary = list(vocabulary)
        self.lowercase = bool(lowercase)
        self._tokenizer = text.FastBertTokenizer(
            vocab=self.vocabulary,
            suffix_indicator="##",
            unknown_token="[UNK]",
            token_out_type=tf.int32,
            lower_case_nfd_strip_accents=self.lowercase,
        )
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(5)

    @classmethod
    def from_file(cls, path: str, lowercase: bool = True) -> BertTokenizer:
        return cls(read_vocabulary(path), lowercase=lowercase)

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def __call__(self, strings) -> tf.RaggedTensor:
        """Tokenizes a 1-D batch of strings into int32 ids, shape [batch, (tokens)]."""
        return self._tokenizer.tokenize(strings)

    def tokenize_with_offsets(self, strings):
        """Ids plus the UTF-8 byte offsets [start, end) of each piece in its string."""
        return self._tokenizer.tokenize_with_offsets(strings)

    def id_to_token(self, ids) -> list[str]:
        return [self.vocabulary[int(i)] for i in ids]

    def continuation_table(self) -> tf.Tensor:
        """bool [vocabulary_size]: True for `##` pieces that continue a word."""
        return tf.constant([t.startswith("##") for t in self.vocabulary], tf.bool)

    def save(self, directory: str) -> str:
        """Writes `vocab.txt` into `directory` (atomically); returns its path."""
        from keras_bert_lite.io import write_text

        path = os.path.join(directory, "vocab.txt")
        write_text(path, "\n".join(self.vocabulary) + "\n")
        return path


def check_vocabulary(vocabulary: list[str], where: str = "vocabulary") -> None:
    """Raises KblError unless the five special tokens lead and no token repeats."""
    head = tuple(vocabulary[: len(SPECIAL_TOKENS)])
    if head != SPECIAL_TOKENS:
        raise KblError(
            f"{where}: must start with {' '.join(SPECIAL_TOKENS)} (ids 0-4), "
            f"found {' '.join(head) or 'nothing'}; learn one with `kbl vocab`"
        )
    seen: dict[str, int] = {}
    for i, token in enumerate(vocabulary):
        if token in seen:
            raise KblError(
                f"{where}: line {i + 1}: token {token!r} repeats line "
                f"{seen[token] + 1}; remove the duplicate"
            )
        seen[token] = i
