"""Raw strings -> model inputs inside a TensorFlow graph, as `data.tasks` encodes them.

The exported models carry the run's own tokenizer (tensorflow-text FastBertTokenizer,
which has TFLite kernels) and pack its pieces with the same rules as training:
`[CLS] A [SEP]` truncated to T, `[CLS] A [SEP] B [SEP]` truncated longest-first, and
`[CLS] question [SEP] context [SEP]` for QA. Packing uses only dense gathers and
selects (no ragged ops), so the same code lowers to TFLite builtins. Rows have
T = seq_len positions, zero-padded, like the training features; with `fit=True` the
batch is packed to its longest row instead (T = longest + its special tokens, at most
seq_len), which gives the same outputs for a classifier (padding is masked) and is
several times faster for short texts: the serving paths of classifiers use it.

B = batch, T = seq_len, P = word pieces in the whole batch.
"""

from __future__ import annotations

import functools
import sys

import tensorflow as tf

from keras_bert_lite.cjk import CJK_RANGES, edge_punctuation
from keras_bert_lite.data.tasks import CLS_ID, PAD_ID, SEP_ID, UNK_ID

_FAR = 2**30  # past any byte offset: padding for sorted offset tables


class Pieces:
    """One batch of tokenized strings, flat: the pieces of row b are
    `ids[starts[b] : starts[b] + lengths[b]]`.

    With `offsets=True`, `byte_offsets` maps pieces to the UTF-8 bytes they came
    from. It is computed here rather than by `tokenize_with_offsets`, whose mapping
    from normalized to original text is a ragged gather that TFLite cannot run; the
    normalizer and WordPiece ops are the tokenizer's own, so ids and offsets are the
    same.
    """

    def __init__(self, tokenizer, strings, offsets: bool = False):
        self._offsets = None
        if offsets:
            # The run's FastBertTokenizer parts, configured as training used them.
            fast = tokenizer._tokenizer
            normalized, norm_offsets = (
                fast._fast_bert_normalizer.normalize_with_offsets(strings)
            )
            ids, begin, end = fast._fast_wordpiece_tokenizer.tokenize_with_offsets(
                normalized
            )
            norm_splits = tf.cast(norm_offsets.row_splits, tf.int32)
            self._offsets = (
                tf.cast(begin.flat_values, tf.int32),  # [P] into the normalized text
                tf.cast(end.flat_values, tf.int32),
                tf.cast(norm_offsets.flat_values, tf.int32),  # normalized -> original
                norm_splits[:-1],  # [B]: where each string's offset table starts
            )
        else:
            ids = tokenizer(strings)
        if ids.ragged_rank != 1:
            raise ValueError("expected [batch, (pieces)] from the tokenizer")
        splits = tf.cast(ids.row_splits, tf.int32)  # [B + 1]
        self.ids = tf.cast(ids.flat_values, tf.int32)  # [P]
        self.starts = splits[:-1]  # [B]
        self.lengths = splits[1:] - splits[:-1]  # [B]

    def byte_offsets(self, index, valid):
        """[B, T] UTF-8 byte spans [begin, end) in the original strings of the pieces
        at `index` in each row (where `valid`; -1 elsewhere)."""
        begin, end, table, table_starts = self._offsets
        spans = []
        for post in (begin, end):
            at = _take(post, self.starts, index, valid, 0)  # in the normalized text
            spans.append(tf.where(valid, _take(table, table_starts, at, valid, 0), -1))
        return spans

    def char_spans(self, texts, index, valid):
        """[B, T] character spans in `texts` of the pieces at `index` (-1 where
        not `valid`)."""
        return [bytes_to_chars(texts, x) for x in self.byte_offsets(index, valid)]


def _take(values, starts, index, valid, fill: int):
    """[B, T]: `values[starts[b] + index[b, t]]` where `valid`, else `fill`.

    Invalid positions read one extra slot appended to `values`, so no index ever
    points outside the tensor (an empty batch has no pieces at all).
    """
    padded = tf.concat([values, tf.fill([1], tf.constant(fill, values.dtype))], 0)
    safe = tf.where(valid, starts[:, None] + index, tf.shape(values)[0])
    return tf.gather(padded, safe)


def truncate_pair(len_a, len_b, budget):
    """Segment lengths after BERT's longest-first truncation (tokens drop from the
    end of the longer segment, B's on a tie), as `data.tasks.truncated_lengths`
    computes them, elementwise over int32 tensors."""
    hi, lo = budget - budget // 2, budget // 2
    a_if_a_longer = tf.where(2 * len_b <= budget, budget - len_b, hi)
    b_if_a_longer = tf.where(2 * len_b <= budget, len_b, lo)
    a_otherwise = tf.where(2 * len_a <= budget, len_a, hi)
    b_otherwise = tf.where(2 * len_a <= budget, budget - len_a, lo)
    fits = len_a + len_b <= budget
    a_longer = len_a > len_b
    keep_a = tf.where(fits, len_a, tf.where(a_longer, a_if_a_longer, a_otherwise))
    keep_b = tf.where(fits, len_b, tf.where(a_longer, b_if_a_longer, b_otherwise))
    return keep_a, keep_b


def _width(ends, seq_len: int, fit: bool):
    """T: `seq_len`, or with `fit` one past the last real position of the batch's
    longest row (`ends`: [B] last real positions; 2 for an empty batch)."""
    if not fit:
        return seq_len
    return tf.reduce_max(tf.concat([ends, tf.ones([1], tf.int32)], 0)) + 1


def _pack(
    first: Pieces,
    keep_a,
    second: Pieces | None,
    keep_b,
    seq_len: int,
    fit: bool = False,
):
    """`[CLS] A[:keep_a] [SEP]` (+ `B[:keep_b] [SEP]`) as the three int32 [B, T]
    model inputs (T from `_width`)."""
    ends = keep_a + 1 if second is None else keep_a + keep_b + 2
    width = _width(ends, seq_len, fit)
    position = tf.range(width, dtype=tf.int32)[None, :]  # [1, T]
    ka = keep_a[:, None]  # [B, 1]
    in_a = (position >= 1) & (position <= ka)
    token_ids = _take(first.ids, first.starts, position - 1, in_a, PAD_ID)
    token_ids = tf.where(position == 0, CLS_ID, token_ids)
    token_ids = tf.where(position == ka + 1, SEP_ID, token_ids)
    last = ka + 1  # the last real position
    segment_ids = tf.zeros_like(token_ids)
    if second is not None:
        kb = keep_b[:, None]
        b_start = ka + 2
        in_b = (position >= b_start) & (position < b_start + kb)
        token_ids = tf.where(
            in_b,
            _take(second.ids, second.starts, position - b_start, in_b, PAD_ID),
            token_ids,
        )
        token_ids = tf.where(position == b_start + kb, SEP_ID, token_ids)
        last = b_start + kb
        # A select, not a cast of the bool: the TFLite converter folds the embedding's
        # `segment_ids < 0` check on a cast bool into a bool zeros_like it cannot run.
        segment_ids = tf.where((position >= b_start) & (position <= last), 1, 0)
    inside = position <= last
    token_ids = tf.where(inside, token_ids, PAD_ID)
    return {
        "token_ids": token_ids,
        "segment_ids": segment_ids,
        "padding_mask": tf.cast(inside, tf.int32),
    }


def encode_single(
    tokenizer, texts, seq_len: int, offsets: bool = False, fit: bool = False
) -> dict:
    """`[CLS] text [SEP]` features (the first seq_len - 2 pieces), as
    `tasks.encode_classification`. With `offsets`, also `piece_begin`/`piece_end`
    int32 [B, T]: each text piece's UTF-8 byte span in its string, -1 elsewhere.
    With `fit`, packed to the longest row (`_width`)."""
    if offsets and fit:
        raise ValueError("offsets are given for the full seq_len only")
    pieces = Pieces(tokenizer, texts, offsets)
    keep = tf.minimum(pieces.lengths, seq_len - 2)
    features = _pack(pieces, keep, None, None, seq_len, fit)
    if offsets:
        position = tf.range(seq_len, dtype=tf.int32)[None, :]
        in_text = (position >= 1) & (position <= keep[:, None])
        begin, end = pieces.byte_offsets(position - 1, in_text)
        features["piece_begin"], features["piece_end"] = begin, end
    return features


class WordPieces:
    """The pieces of each text's words (`word_spans`), each word tokenized on its
    own and given one [UNK] when it has no piece (a lone control or zero-width
    character), as `tasks.encode_tagging` packs a sentence's words: `ids`,
    `starts`, `lengths` as `Pieces` give them."""

    def __init__(self, tokenizer, texts):
        starts, ends = word_spans(texts)  # [B, W]
        is_word = starts >= 0
        per_text = tf.reduce_sum(tf.cast(is_word, tf.int32), 1)  # [B]
        begin = tf.boolean_mask(starts, is_word)  # [V]: every word of the batch
        end = tf.boolean_mask(ends, is_word)
        words = tf.strings.substr(
            tf.repeat(texts, per_text), begin, end - begin, unit="UTF8_CHAR"
        )
        pieces = Pieces(tokenizer, words, offsets=True)
        count = tf.maximum(pieces.lengths, 1)  # [V]: one [UNK] for a word without
        k = tf.range(tf.reduce_max(tf.concat([count, [0]], 0)))[None, :]  # [1, K]
        kept = k < count[:, None]  # [V, K]
        real = k < pieces.lengths[:, None]
        ids = _take(pieces.ids, pieces.starts, k, real, UNK_ID)
        byte_begin, byte_end = pieces.byte_offsets(k, real)  # in the word
        # Character spans in the text; an [UNK] spans its whole word.
        char_begin = tf.where(real, bytes_to_chars(words, byte_begin), 0)
        char_end = tf.where(
            real, bytes_to_chars(words, byte_end), (end - begin)[:, None]
        )
        self.ids = tf.boolean_mask(ids, kept)  # [P]
        first = tf.broadcast_to(tf.cast(k == 0, tf.int32), tf.shape(kept))
        self._first = tf.boolean_mask(first, kept)  # [P]: 1 on a word's first piece
        self._begin = tf.boolean_mask(char_begin + begin[:, None], kept)
        self._end = tf.boolean_mask(char_end + begin[:, None], kept)
        word_text = tf.repeat(tf.range(tf.shape(texts)[0]), per_text)
        self.lengths = tf.math.unsorted_segment_sum(
            count, word_text, tf.shape(texts)[0]
        )
        self.starts = tf.cumsum(self.lengths, exclusive=True)

    def char_spans(self, texts, index, valid):
        """[B, T] character spans of the pieces at `index` (-1 elsewhere)."""
        return [
            tf.where(valid, _take(values, self.starts, index, valid, 0), -1)
            for values in (self._begin, self._end)
        ]

    def word_firsts(self, index, valid):
        """[B, T] bool: the pieces at `index` that are their word's first (False
        where not `valid`): the pieces training labels."""
        return _take(self._first, self.starts, index, valid, 0) > 0


class Windows:
    """Each text's pieces as overlapping windows, as `tasks._windows` cuts them:
    `size` pieces long, each starting min(size, stride) after the last, the last
    reaching the end (one empty window for a text without pieces).

    `size` and `stride` are ints or int32 [B] (per text). R = windows in the batch:
    `text`, `start`, `length` int32 [R] (each window's text, first piece, pieces),
    `count` [B] (each text's windows) and `first_row` [B] (the row of its first).
    """

    def __init__(self, pieces: Pieces, size, stride):
        self.pieces = pieces
        n = pieces.lengths
        self.size = tf.broadcast_to(tf.cast(size, tf.int32), tf.shape(n))  # [B]
        self.step = tf.minimum(self.size, tf.cast(stride, tf.int32))  # [B]
        past = tf.maximum(n - self.size, 0)
        self.count = 1 + (past + self.step - 1) // self.step  # [B]
        self.first_row = tf.cumsum(self.count, exclusive=True)
        self.text = tf.repeat(tf.range(tf.shape(n)[0]), self.count)  # [R]
        k = tf.range(tf.shape(self.text)[0]) - tf.gather(self.first_row, self.text)
        self.start = k * tf.gather(self.step, self.text)
        self.length = tf.minimum(
            tf.gather(self.size, self.text), tf.gather(n, self.text) - self.start
        )

    def pieces_at(self, index, valid, fill: int):
        """[R, T]: the ids of the pieces at `index` [R, T] of each window, where
        `valid`, else `fill`."""
        starts = tf.gather(self.pieces.starts, self.text) + self.start
        return _take(self.pieces.ids, starts, index, valid, fill)

    def _piece_index(self):
        """[1, P]: 0 .. P - 1, P the longest text's pieces."""
        return tf.range(tf.reduce_max(tf.concat([self.pieces.lengths, [0]], 0)))[None]

    def owners(self):
        """(row, index) int32 [B, P]: for each piece of each text (P = the longest
        text's pieces), the window where it has the most context on its shorter
        side (ties to the earlier window) and its index in that window, as
        `tasks._max_context_window`; (0, 0) past a text's pieces.

        Built from TFLite builtins: expand_dims rather than `[..., None]` (an
        ellipsis slice lowers to a StridedSlice LiteRT cannot run), and the score
        in int32, 100 x context + length, which orders windows exactly as the
        run's context + 0.01 x length does (float64 has no TFLite kernels here).
        """
        n, p = self.pieces.lengths[:, None], self._piece_index()  # [B, 1], [1, P]
        size, step = self.size[:, None, None], self.step[:, None, None]
        # The windows that can hold piece p: at most size / step + 1 of them,
        # ending with window p // step; in ascending order, so argmax picks the
        # earlier on a tie.
        reach = tf.reduce_max(tf.concat([-(-self.size // self.step), [0]], 0)) + 1
        last = tf.minimum(p // self.step[:, None], self.count[:, None] - 1)
        window = tf.expand_dims(last, -1) - tf.range(reach - 1, -1, -1)  # [B, P, C]
        start = window * step
        length = tf.minimum(size, tf.expand_dims(n, -1) - start)
        at = tf.expand_dims(p, -1)
        holds = (window >= 0) & (at >= start) & (at < start + length)
        context = tf.minimum(at - start, start + length - 1 - at)
        score = tf.where(holds, 100 * context + length, -1)  # >= 1 where it holds
        owner = tf.gather(window, tf.argmax(score, -1, tf.int32), batch_dims=2)
        real = p < n
        row = tf.where(real, self.first_row[:, None] + owner, 0)
        index = tf.where(real, p - owner * self.step[:, None], 0)
        return row, index

    def _every_piece(self):
        """(index [1, P], valid [B, P]): every piece of each text."""
        p = self._piece_index()
        return p, p < self.pieces.lengths[:, None]

    def piece_spans(self, texts):
        """Character (start, end) of every piece of each text, int32 [B, P] (-1 past
        a text's pieces)."""
        return self.pieces.char_spans(texts, *self._every_piece())

    def piece_bytes(self):
        """UTF-8 byte (begin, end) of every piece of each text, int32 [B, P] (-1
        past a text's pieces), for `Pieces` tokenized with offsets: core ops that
        TFLite runs, where `piece_spans` needs unicode_decode."""
        return self.pieces.byte_offsets(*self._every_piece())


class TextWindows(Windows):
    """Every text's pieces in windows of seq_len - 2, half a window apart (as
    `tasks.encode_tagging` windows a sentence), each packed `[CLS] pieces [SEP]`:
    `features`, the three int32 [R, T] model inputs.

    `pieces`: `WordPieces` (each word tokenized on its own, as the run does) or
    `Pieces` of the whole texts (what TFLite builtins can run)."""

    def __init__(self, pieces: Pieces | WordPieces, seq_len: int):
        size = seq_len - 2
        stride = max(1, size // 2)  # as `tasks.encode_tagging`
        super().__init__(pieces, size, stride)
        length = self.length[:, None]  # [R, 1]
        position = tf.range(seq_len, dtype=tf.int32)[None, :]
        in_window = (position >= 1) & (position <= length)
        token_ids = self.pieces_at(position - 1, in_window, PAD_ID)
        token_ids = tf.where(position == 0, CLS_ID, token_ids)
        token_ids = tf.where(position == length + 1, SEP_ID, token_ids)
        inside = position <= length + 1
        self.features = {
            "token_ids": tf.where(inside, token_ids, PAD_ID),
            "segment_ids": tf.zeros_like(token_ids),
            "padding_mask": tf.cast(inside, tf.int32),
        }

    def per_piece(self, per_window):
        """[R, T, ...] per-position outputs of the windows -> [B, P, ...]: each
        piece's from the window where it has the most context (`owners`); a
        window's pieces start at position 1."""
        row, index = self.owners()
        return tf.gather_nd(per_window, tf.stack([row, index + 1], -1))

    def first_window(self, values, fill: int):
        """[B, P] per-piece values -> [B, T] as each text's first window holds
        them: position t has piece t - 1, `fill` at [CLS], [SEP] and padding."""
        width = tf.shape(self.features["token_ids"])[1]
        position = tf.range(width)[None, :]  # [1, T]
        read = tf.minimum(self.pieces.lengths, self.size)[:, None]
        valid = (position >= 1) & (position <= read)
        # One `fill` column past the pieces, for the positions that hold none.
        padded = tf.pad(values, [[0, 0], [0, 1]], constant_values=fill)
        index = tf.where(valid, position - 1, tf.shape(values)[1])
        return tf.gather(padded, index, batch_dims=1)


class QuestionWindows(Windows):
    """`[CLS] question [SEP] context window [SEP]` for every window of each context,
    as `tasks.encode_squad` makes them: the question's first `max_query_len`
    pieces, the context in windows of the rest, `doc_stride` apart.

    `features`: the three int32 [R, T] model inputs; `piece_begin`/`piece_end`
    int32 [R, T]: the context pieces' spans in the context (-1 elsewhere), in
    characters, or with `spans="bytes"` in UTF-8 bytes (core ops that TFLite
    runs); `max_context` bool [R, T]: the context pieces whose most-context window
    this row is.
    """

    def __init__(
        self,
        tokenizer,
        questions,
        contexts,
        seq_len,
        doc_stride,
        max_query_len,
        spans: str = "chars",
    ):
        if spans not in ("chars", "bytes"):
            raise ValueError(f"spans: 'chars' or 'bytes', not {spans!r}")
        question = Pieces(tokenizer, questions)
        keep_q = tf.minimum(question.lengths, max_query_len)  # [B]
        super().__init__(
            Pieces(tokenizer, contexts, offsets=True), seq_len - keep_q - 3, doc_stride
        )
        q = tf.gather(keep_q, self.text)[:, None]  # [R, 1]
        length = self.length[:, None]
        position = tf.range(seq_len, dtype=tf.int32)[None, :]
        in_q = (position >= 1) & (position <= q)
        q_starts = tf.gather(question.starts, self.text)
        token_ids = _take(question.ids, q_starts, position - 1, in_q, PAD_ID)
        token_ids = tf.where(position == 0, CLS_ID, token_ids)
        token_ids = tf.where(position == q + 1, SEP_ID, token_ids)
        offset = q + 2
        in_c = (position >= offset) & (position < offset + length)
        index = position - offset  # in the window
        token_ids = tf.where(in_c, self.pieces_at(index, in_c, PAD_ID), token_ids)
        last = offset + length  # the closing [SEP]
        token_ids = tf.where(position == last, SEP_ID, token_ids)
        inside = position <= last
        self.features = {
            "token_ids": tf.where(inside, token_ids, PAD_ID),
            "segment_ids": tf.where((position >= offset) & inside, 1, 0),
            "padding_mask": tf.cast(inside, tf.int32),
        }
        # Each context piece's span and most-context window, per row.
        start, end = (
            self.piece_spans(contexts) if spans == "chars" else self.piece_bytes()
        )  # [B, P]
        row, _ = self.owners()
        piece = tf.where(in_c, self.start[:, None] + index, 0)  # in the context
        text = tf.broadcast_to(self.text[:, None], tf.shape(piece))
        at = tf.stack([text, piece], -1)
        self.piece_begin = tf.where(in_c, _gather_safe(start, at), -1)
        self.piece_end = tf.where(in_c, _gather_safe(end, at), -1)
        own = tf.range(tf.shape(self.text)[0])[:, None]
        self.max_context = in_c & (_gather_safe(row, at) == own)
        self._in_context, self._index = in_c, index

    def first_window_bytes(self):
        """[B, T] UTF-8 byte spans in each context of its first window's context
        pieces (-1 elsewhere), as `encode_question` gives them."""
        index = tf.gather(self._index, self.first_row)  # the window starts at 0
        valid = tf.gather(self._in_context, self.first_row)
        return self.pieces.byte_offsets(index, valid)


def _gather_safe(values, at):
    """`tf.gather_nd(values [B, P], at [..., 2])`, reading 0 where P is 0."""
    padded = tf.pad(values, [[0, 0], [0, 1]])
    return tf.gather_nd(padded, at)


def encode_pair(tokenizer, texts, pairs, seq_len: int, fit: bool = False) -> dict:
    """`[CLS] text [SEP] text_pair [SEP]` features, truncated longest-first, as
    `tasks.encode_classification` on `text_a`/`text_b` records; with `fit`, packed
    to the longest row."""
    a, b = Pieces(tokenizer, texts), Pieces(tokenizer, pairs)
    keep_a, keep_b = truncate_pair(a.lengths, b.lengths, seq_len - 3)
    return _pack(a, keep_a, b, keep_b, seq_len, fit)


def pad_positions(token_ids, seq_len: int):
    """[B, T] -> [B, seq_len]: a fitted batch's token ids padded with [PAD] back to
    the export's fixed width (its documented shape)."""
    width = seq_len - tf.shape(token_ids)[1]
    padded = tf.pad(token_ids, [[0, 0], [0, width]], constant_values=PAD_ID)
    return tf.reshape(padded, [-1, seq_len])


def encode_question(
    tokenizer, questions, contexts, seq_len: int, max_query_len: int
) -> dict:
    """`[CLS] question [SEP] context [SEP]` features for the first window of each
    context, as `tasks.encode_squad` makes them: the question keeps its first
    `max_query_len` pieces, the context fills the rest. `piece_begin`/`piece_end`
    hold the context pieces' UTF-8 byte spans in the context, -1 elsewhere."""
    q = Pieces(tokenizer, questions)
    c = Pieces(tokenizer, contexts, offsets=True)
    keep_q = tf.minimum(q.lengths, max_query_len)
    keep_c = tf.maximum(tf.minimum(c.lengths, seq_len - keep_q - 3), 0)
    features = _pack(q, keep_q, c, keep_c, seq_len)
    position = tf.range(seq_len, dtype=tf.int32)[None, :]
    c_start = keep_q[:, None] + 2
    in_c = (position >= c_start) & (position < c_start + keep_c[:, None])
    begin, end = c.byte_offsets(position - c_start, in_c)
    features["piece_begin"], features["piece_end"] = begin, end
    return features


def bytes_to_chars(strings, offsets):
    """UTF-8 byte offsets [B, T] into `strings` [B] -> character offsets (-1 stays
    -1), with core TensorFlow ops only (as `tasks._bytes_to_chars`)."""
    _, char_starts = tf.strings.unicode_decode_with_offsets(
        strings, "UTF-8", errors="replace"
    )
    table = tf.cast(char_starts.to_tensor(default_value=_FAR), tf.int32)  # [B, C]
    # One sentinel column keeps the table non-empty when every string is empty.
    table = tf.concat([table, tf.fill([tf.shape(table)[0], 1], _FAR)], 1)
    # A character's index is how many characters start before its first byte.
    return tf.where(offsets >= 0, searchsorted(table, offsets), -1)


def searchsorted(table, values):
    """`tf.searchsorted(table, values, side="left")` as int32 [B, N], also for
    N = 0 (which tf.searchsorted cannot reshape when B is 0)."""
    padded = tf.pad(values, [[0, 0], [0, 1]])
    return tf.searchsorted(table, padded, side="left", out_type=tf.int32)[:, :-1]


@functools.lru_cache(maxsize=1)
def _spaces() -> tuple[int, ...]:
    """The code points `\\s` matches in `tasks.words_with_offsets` (Python's re
    matches str.isspace characters)."""
    return tuple(c for c in range(sys.maxunicode + 1) if chr(c).isspace())


def word_spans(texts):
    """[B] strings -> the character (start, end) of each word, int32 [B, W] each
    (-1 past a text's last word), as `tasks.words_with_offsets`."""
    codepoints = tf.strings.unicode_decode(texts, "UTF-8", errors="replace")
    points = tf.cast(codepoints.to_tensor(default_value=-1), tf.int32)  # [B, C]
    breaks = (points < 0) | tf.reduce_any(
        points[..., None] == tf.constant(_spaces(), tf.int32), -1
    )
    cjk = tf.zeros_like(breaks)
    for low, high in CJK_RANGES:
        cjk |= (points >= low) & (points <= high)
    position = tf.broadcast_to(tf.range(tf.shape(points)[1]), tf.shape(points))
    # Runs of characters between spaces and CJK characters; their opening and
    # closing punctuation is split off, a word per character.
    edge = _run_edges(points, ~(breaks | cjk), position)
    # A CJK character and an edge punctuation character are words of one
    # character; a word starts after a space (or the text's start) or one of
    # them, and ends before one.
    single = cjk | edge
    boundary = breaks | single
    edge_col = tf.ones_like(breaks[:, :1])
    after = tf.concat([edge_col, boundary[:, :-1]], 1)
    before = tf.concat([boundary[:, 1:], edge_col], 1)
    word = ~breaks
    starts = tf.ragged.boolean_mask(position, word & (after | single))
    ends = tf.ragged.boolean_mask(position + 1, word & (before | single))
    return starts.to_tensor(-1), ends.to_tensor(-1)


def _run_edges(points, in_run, position):
    """bool [B, C]: the characters of the runs `in_run` marks that
    `tasks.words_with_offsets` splits off: a run's opening punctuation before its
    core, its closing punctuation after (an abbreviation's last full stop kept),
    none in a run that is nothing else."""
    opening, closing = (_member(points, chars) for chars in _edge_points())
    run_start = in_run & tf.concat([tf.ones_like(in_run[:, :1]), ~in_run[:, :-1]], 1)
    # A batch-wide index of each character's run (rows offset by the runs before).
    runs = tf.reduce_sum(tf.cast(run_start, tf.int32), 1)
    run = tf.cumsum(tf.cast(run_start, tf.int32), 1) - 1
    run = tf.where(in_run, run + tf.cumsum(runs, exclusive=True)[:, None], -1)
    total = tf.reduce_sum(runs)
    flat_run = tf.reshape(run, [-1])

    def per_run(values, where, reduce):
        """`reduce` of `values` over the characters of each run that `where` marks
        (the reduction's identity for none), at each character of the run."""
        ids = tf.where(tf.reshape(where, [-1]), flat_run, total)  # `total`: unused
        out = reduce(tf.reshape(values, [-1]), ids, total + 1)
        return tf.reshape(tf.gather(out, tf.maximum(flat_run, 0)), tf.shape(points))

    maximum, minimum = tf.math.unsorted_segment_max, tf.math.unsorted_segment_min
    end = per_run(position + 1, in_run, maximum)
    first = tf.minimum(per_run(position, in_run & ~opening, minimum), end)
    core = in_run & (position >= first)
    last = tf.maximum(per_run(position + 1, core & ~closing, maximum), first)
    dot = tf.cast(points == ord("."), tf.int32)
    held = per_run(dot, core & (position < last), maximum) > 0
    follows = per_run(dot, in_run & (position == last), maximum) > 0
    last += tf.cast(held & follows, tf.int32)  # an abbreviation's full stop stays
    return in_run & (first < last) & ((position < first) | (position >= last))


@functools.lru_cache(maxsize=1)
def _edge_points() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The code points of `keras_bert_lite.cjk.edge_punctuation`, each in order."""
    return tuple(tuple(sorted(map(ord, chars))) for chars in edge_punctuation())


def _member(points, table):
    """int32 code points [B, C] -> bool [B, C]: those in the sorted `table`."""
    table = tf.constant(table, tf.int32)
    flat = tf.reshape(points, [1, -1])
    index = searchsorted(table[None, :], flat)[0]
    found = tf.gather(table, tf.minimum(index, tf.size(table) - 1)) == flat[0]
    return tf.reshape(found, tf.shape(points))
