"""Raw documents -> next-sentence pairs -> packed segments -> dynamic masks -> batches.

Shape legend: B = batch, T = seq_len, P = max_predictions.

The stages:
1. `read_indexed_documents` streams documents (lists of sentences) from the corpus
   files, several files interleaved, each keyed by (file, document) number.
2. The sentences of several documents at a time are tokenized in one call of the
   in-graph FastBertTokenizer. A corpus whose ids fit in `cache_bytes` is read and
   tokenized once, in its first pass, and its documents replayed after it.
3. `InstanceBuilder` (Python, seeded `random.Random`) cuts documents into segment pairs
   the way google-research/bert's create_pretraining_data.py does, drawing NotNext
   segments from a pool of other documents so the corpus need never be held in memory.
4. tf.data packs `[CLS] A [SEP] B [SEP]` and masks with tensorflow-text's
   `mask_language_model` on every pass, so each epoch sees new masks (dynamic masking),
   several batches at once.

Repeatability: the Python RNG is seeded from (seed, pass); a batch's masks are drawn by
stateless generators keyed by (seed, the batch's number in the stream). A dataset
iterated twice from the start gives the same stream; one continuing iterator (training:
`repeat=True`) keeps drawing new masks and new pairs.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, chain, pairwise

import numpy as np
import tensorflow as tf
import tensorflow_text as text

from keras_bert_lite.config import DEFAULT_CACHE_MIB, DataConfig
from keras_bert_lite.data.corpus import (
    CorpusStats,
    expand_paths,
    read_indexed_documents,
)
from keras_bert_lite.data.tasks import truncated_lengths
from keras_bert_lite.errors import KblError
from keras_bert_lite.text.tokenizer import BertTokenizer

IS_NEXT, NOT_NEXT = 0, 1
DEFAULT_CACHE_BYTES = DEFAULT_CACHE_MIB << 20
_EMPTY = np.zeros(0, np.int32)


def is_held_out(key: tuple[int, int], share: float, seed: int) -> bool:
    """Whether a document is in the held-out evaluation share: a stable hash of its
    (file number, document number in the file), so every worker, reading any share
    of the files in any order, agrees."""
    if share <= 0:
        return False
    return zlib.crc32(f"{seed}:{key[0]}:{key[1]}".encode()) % 10_000 < share * 10_000


def _selector(split: str, share: float, seed: int) -> Callable[[tuple], bool]:
    if split not in ("all", "train", "held_out"):
        raise KblError(f"unknown split '{split}': choose all, train or held_out")
    if split == "all":
        return lambda key: True
    return lambda key: is_held_out(key, share, seed) == (split == "held_out")


def _shard_files(files, shard: tuple[int, int] | None) -> list[tuple[int, str]]:
    """(file number, path) of the files this worker reads: every file, or with
    `shard=(index, count)` every count-th one from the index-th."""
    numbered = list(enumerate(expand_paths(files)))
    if shard is None:
        return numbered
    index, count = shard
    if not 0 <= index < count or count > len(numbered):
        raise KblError(
            f"cannot shard {len(numbered)} corpus file(s) over {count} workers; "
            "split the corpus into at least as many files as workers"
        )
    return numbered[index::count]


def text_room(seq_len: int, nsp: bool) -> int:
    """Tokens of text one example holds: seq_len less [CLS] and a [SEP] per segment."""
    return seq_len - (3 if nsp else 2)


def _truncate_pair(
    a: tuple[int, int], b: tuple[int, int], max_tokens: int, rng: random.Random
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (start, end) spans of A and B after trimming the longer segment one token
    at a time (B on a tie) until the pair fits, each token from the front or the back
    at random (as BERT does, to avoid always cutting sentence ends).

    The lengths are computed without the loop (`truncated_lengths`), and of a
    segment's k cuts the number at its front, Binomial(k, 1/2), is the count of ones
    in k random bits: one draw per segment, however long."""
    kept = truncated_lengths(a[1] - a[0], b[1] - b[0], max_tokens)
    spans = []
    for (start, end), keep in zip((a, b), kept, strict=True):
        cuts = end - start - keep
        if cuts:
            start += rng.getrandbits(cuts).bit_count()
        spans.append((start, start + keep))
    return spans[0], spans[1]


class Document:
    """A tokenized document: all its ids in one array, sentence k at
    `ids[starts[k]:starts[k + 1]]` (no sentence is empty).

    Pairs are cut from it as spans of `ids`, so building them costs Python work per
    sentence boundary, not per token. Iterating gives the sentences (array views).
    """

    __slots__ = ("ids", "starts")

    def __init__(self, ids: np.ndarray, starts: list[int]):
        self.ids = ids
        self.starts = starts

    @classmethod
    def from_sentences(cls, sentences: Iterable[Iterable[int]]) -> Document:
        """From lists of token ids (empty sentences are left out)."""
        sentences = [list(s) for s in sentences if len(s)]
        starts = [0, *accumulate(len(s) for s in sentences)]
        ids = np.fromiter(chain.from_iterable(sentences), np.int32, starts[-1])
        return cls(ids, starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __iter__(self) -> Iterator[np.ndarray]:
        ids = self.ids
        return (ids[s:e] for s, e in pairwise(self.starts))


class InstanceBuilder:
    """Cuts tokenized documents into pretraining instances.

    With `nsp=True` each instance is (A, B, label): A is one or more whole sentences,
    B the true continuation (IsNext) or, half of the time, a run of sentences from a
    different document (NotNext, and the sentences of this document that B did not use
    are put back). A sentence left alone at the end of its document (a one-sentence
    document, say) has no next sentence: its IsNext pair splits it in two. With
    `nsp=False`, each document's tokens are cut into contiguous segments of full
    length (label IS_NEXT, B empty).

    Calling it with documents (`Document`s, or lists of sentences, each a list of
    token ids) yields (A, B, label) with A and B lists of ids; `arrays` yields them as
    NumPy views of the documents' ids (what the pipeline batches).

    Args:
        seq_len: tokens per packed example, special tokens included.
        rng: the random generator; all choices draw from it.
        short_seq_prob: chance that an instance targets a random shorter length.
        nsp: build next-sentence pairs (True) or single segments (False).
        document_pool: documents held back to draw NotNext segments from.
    """

    def __init__(
        self,
        seq_len: int,
        rng: random.Random,
        short_seq_prob: float = 0.1,
        nsp: bool = True,
        document_pool: int = 256,
    ):
        self.max_tokens = text_room(seq_len, nsp)
        self.rng = rng
        self.short_seq_prob = short_seq_prob
        self.nsp = nsp
        self.pool_size = max(2, document_pool)

    def __call__(self, documents: Iterable) -> Iterator[tuple[list, list, int]]:
        for a, b, label in self.arrays(documents):
            yield a.tolist(), b.tolist(), label

    def arrays(
        self, documents: Iterable
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        documents = (
            doc if isinstance(doc, Document) else Document.from_sentences(doc)
            for doc in documents
        )
        documents = (doc for doc in documents if len(doc))
        if not self.nsp:
            for doc in documents:
                yield from self._contiguous(doc)
            return
        # We don't walk documents in corpus order: a pool of documents is filled and
        # drained at random, and the pool plus recently finished documents are where
        # NotNext segments come from. Memory stays bounded by the pool.
        pool: list[Document] = []
        recent: deque = deque(maxlen=self.pool_size)
        for doc in documents:
            pool.append(doc)
            if len(pool) >= self.pool_size:
                doc = pool.pop(self.rng.randrange(len(pool)))
                yield from self._pairs(doc, pool, recent)
                recent.append(doc)
        while pool:
            doc = pool.pop(self.rng.randrange(len(pool)))
            yield from self._pairs(doc, pool, recent)
            recent.append(doc)

    def _contiguous(self, doc: Document):
        ids, step = doc.ids, self.max_tokens
        for start in range(0, len(ids), step):
            yield ids[start : start + step], _EMPTY, IS_NEXT

    def _random_document(self, pool, recent):
        others = len(pool) + len(recent)
        if others == 0:
            return None
        k = self.rng.randrange(others)
        return pool[k] if k < len(pool) else recent[k - len(pool)]

    def _pairs(self, doc: Document, pool, recent):
        rng, ids, starts = self.rng, doc.ids, doc.starts
        n = len(doc)

        def new_target():
            # Mostly full length; sometimes shorter, so the model also sees the short
            # sequences it will meet when fine-tuned.
            if rng.random() < self.short_seq_prob:
                return rng.randint(2, self.max_tokens)
            return self.max_tokens

        target = new_target()
        first = 0  # the chunk's first sentence
        while first < n:
            # The chunk: sentences first..last, the fewest that reach the target (or
            # the rest of the document); `bounds` are its sentences' token starts and
            # its end.
            last = min(bisect_left(starts, starts[first] + target, first + 1), n) - 1
            bounds = starts[first : last + 2]
            is_next = rng.random() >= 0.5
            other = None if is_next else self._random_document(pool, recent)
            if other is None:
                is_next = True
            if is_next and last == first:
                if last + 1 < n:  # B needs a true continuation: take one more
                    last += 1
                    bounds = starts[first : last + 2]
                elif bounds[1] - bounds[0] >= 2 and (pool or recent):
                    # A lone last sentence has no next sentence. BERT's code makes it
                    # NotNext, which tilts the labels off 50/50: by about two points
                    # on real corpora, and most of the way to NotNext when many
                    # documents are one sentence (reviews, tweets). Its IsNext pair
                    # continues the sentence instead: A is a first part of it and B
                    # the rest.
                    cut = rng.randint(1, bounds[1] - bounds[0] - 1)
                    bounds = [bounds[0], bounds[0] + cut, bounds[1]]
                elif pool or recent:  # a one-token sentence: left out
                    target = new_target()
                    first = last + 1
                    continue
            sentences = len(bounds) - 1
            a_end = rng.randint(1, sentences - 1) if sentences >= 2 else 1
            a = (bounds[0], bounds[a_end])
            b_ids = ids
            if is_next:
                b = (bounds[a_end], bounds[-1])
                first = last + 1
            else:
                # B: sentences of the other document from a random one on, the fewest
                # that reach the rest of the target.
                b_ids, other_starts = other.ids, other.starts
                j = rng.randrange(len(other_starts) - 1)
                b_target = max(1, target - (a[1] - a[0]))
                end = bisect_left(other_starts, other_starts[j] + b_target, j + 1)
                b = (other_starts[j], other_starts[min(end, len(other_starts) - 1)])
                # The sentences of this chunk that B did not use go back.
                first += a_end
            a, b = _truncate_pair(a, b, self.max_tokens, rng)
            if a[1] > a[0] and b[1] > b[0]:
                yield (
                    ids[a[0] : a[1]],
                    b_ids[b[0] : b[1]],
                    (IS_NEXT if is_next else NOT_NEXT),
                )
            elif a[1] > a[0] and other is None and not pool and not recent:
                yield ids[a[0] : a[1]], _EMPTY, IS_NEXT  # a one-document corpus
            target = new_target()


def _tokenized_documents(
    files: list[tuple[int, str]],
    tokenizer,
    fmt,
    stats,
    select,
    max_tokens: int,
    batch_sentences: int = 1024,
    cache_bytes: int = 0,
) -> Callable[[], Iterator]:
    """A generator factory: tokenized documents (`Document`s) whose
    (file, document) key passes `select`, read from numbered `files`.

    When every selected document of a pass fits in `cache_bytes` (ids and an
    estimate of their Python objects), the first pass that reads them all keeps
    them and later passes replay them without reading or tokenizing again: the
    same documents in the same order. A larger corpus streams, read and tokenized
    on every pass, and what was kept is dropped as soon as the budget is passed.

    A "sentence" longer than `max_tokens` (a paragraph without punctuation, a 1 MB
    line) is cut into consecutive pieces of at most `max_tokens`: whole, it could only
    be truncated to one example, and the rest of its text would never be seen.

    Sentences of several documents are tokenized together in one eager call (in-graph
    FastBertTokenizer). The generator never iterates another tf.data pipeline: nesting
    one inside `from_generator` deadlocks when the outer iterator is finalised.
    """

    def tokenize(docs):
        sentences = [s for doc in docs for s in doc]
        ids = tokenizer(tf.constant(sentences))
        flat = ids.flat_values.numpy().astype(np.int32, copy=False)
        splits = ids.row_splits.numpy()
        # Token starts of every sentence, a too-long sentence's pieces included, and
        # the end: empty sentences vanish as repeated starts.
        bounds = splits
        long = np.flatnonzero(np.diff(splits) > max_tokens)
        if len(long):
            pieces = [np.arange(splits[k], splits[k + 1], max_tokens) for k in long]
            bounds = np.concatenate([splits, *pieces])
        bounds = np.unique(bounds)
        doc_ends = np.cumsum([len(doc) for doc in docs])
        edges = np.searchsorted(bounds, splits[np.concatenate([[0], doc_ends])])
        for lo, hi in pairwise(edges.tolist()):
            if hi > lo:
                starts = bounds[lo : hi + 1]
                base = int(starts[0])
                # A copy, so that a document keeps only its own ids alive.
                yield Document(flat[base : starts[-1]].copy(), (starts - base).tolist())

    def read():
        pending, size = [], 0
        for key, doc in read_indexed_documents(files, fmt, stats):
            if not select(key):
                continue
            pending.append(doc)
            size += len(doc)
            if size >= batch_sentences:
                yield from tokenize(pending)
                pending, size = [], 0
        if pending:
            yield from tokenize(pending)

    kept: list[Document] | None = None  # the corpus's documents, once kept whole
    streams = cache_bytes <= 0  # True once the corpus is known not to fit

    def tokenized():
        nonlocal kept, streams
        if kept is not None:
            yield from kept
            return
        keeping: list[Document] | None = None if streams else []
        room = cache_bytes
        for doc in read():
            if keeping is not None:
                room -= _held_bytes(doc)
                if room < 0:  # too large: drop what was kept, stream every pass
                    keeping, streams = None, True
                else:
                    keeping.append(doc)
            yield doc
        if keeping is not None:  # a whole pass, read to its end
            kept = keeping

    return tokenized


def _held_bytes(doc: Document) -> int:
    """About what keeping `doc` costs: its ids plus its Python objects (the
    Document, the array header, the list of starts and their ints)."""
    return doc.ids.nbytes + 40 * len(doc.starts) + 300


class _SeededSelector(text.RandomItemSelector):
    """tensorflow-text's `RandomItemSelector` with its draws keyed by a seed.

    The same choice (ceil(rate x selectable items) per row, at most
    `max_selections_per_batch`, uniformly at random among the selectable ones), made
    for the whole batch at once: each item gets a uniform key from a stateless
    generator and a row takes its k smallest. The stock selector shuffles row by row
    in a `map_fn` from the shared op-level generator, which is slower and ties a
    batch's masks to the order in which batches are masked, so that masking could
    not run in parallel.
    """

    def __init__(self, seed, **kwargs):
        super().__init__(**kwargs)
        self._seed = seed

    def get_selection_mask(self, input_ids, axis=1):
        if axis != 1:
            raise ValueError("_SeededSelector selects along axis 1")
        selectable = self.get_selectable(input_ids, axis)  # [B, (items)]
        count = tf.reduce_sum(tf.cast(selectable, tf.float32), axis=1)
        take = tf.minimum(
            tf.math.ceil(count * self.selection_rate),
            float(self.max_selections_per_batch),
        )
        keys = tf.random.stateless_uniform(
            tf.shape(selectable.flat_values), seed=self._seed
        )
        # Unselectable items sort after every selectable one, padding after those.
        keys = tf.where(selectable.flat_values, keys, 2.0)
        dense = selectable.with_flat_values(keys).to_tensor(default_value=3.0)
        rank = tf.argsort(tf.argsort(dense, axis=1), axis=1)  # [B, max items]
        chosen = rank < tf.cast(take, tf.int32)[:, None]
        return tf.RaggedTensor.from_tensor(
            chosen,
            lengths=selectable.row_lengths(),
            row_splits_dtype=selectable.row_splits.dtype,
        )


class _SeededChooser(text.MaskValuesChooser):
    """tensorflow-text's `MaskValuesChooser` (mask / random token / unchanged) with
    its draws keyed by a seed instead of the shared op-level generator."""

    def __init__(self, seed, *args, mask_token_rate, random_token_rate):
        super().__init__(
            *args, mask_token_rate=mask_token_rate, random_token_rate=random_token_rate
        )
        self._seed = seed

    def get_mask_values(self, masked_lm_ids):
        flat = masked_lm_ids.flat_values
        choice_seed, token_seed = tf.unstack(
            tf.random.experimental.stateless_split(self._seed, 2)
        )
        draw = tf.random.stateless_uniform(tf.shape(flat), seed=choice_seed)
        random_ids = tf.random.stateless_uniform(
            tf.shape(flat),
            seed=token_seed,
            maxval=self.vocab_size,
            dtype=flat.dtype,
        )
        mask_rate = self._mask_token_rate
        values = tf.where(
            draw < mask_rate,
            tf.cast(self.mask_token, flat.dtype),
            tf.where(draw < mask_rate + self.random_token_rate, random_ids, flat),
        )
        return masked_lm_ids.with_flat_values(values)


def _masker(tokenizer: BertTokenizer, config: DataConfig, seed: int):
    """The batched tf.data function: pack, mask and pad one batch of instances.

    Its random draws are keyed by (`seed`, the batch's number in the stream), so a
    batch's masks depend on nothing else and batches can be masked in parallel."""
    seq_len, max_predictions = config.seq_len, config.max_predictions
    specials = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id]

    def choosers(batch_number):
        key = tf.stack([tf.constant(seed, tf.int64), batch_number])
        select_seed, value_seed = tf.unstack(
            tf.random.experimental.stateless_split(key, 2)
        )
        selector = _SeededSelector(
            select_seed,
            max_selections_per_batch=max_predictions,
            selection_rate=config.mask_rate,
            unselectable_ids=specials,
        )
        chooser = _SeededChooser(
            value_seed,
            tokenizer.vocabulary_size,
            tokenizer.mask_id,
            mask_token_rate=config.mask_token_rate,
            random_token_rate=config.random_token_rate,
        )
        return selector, chooser

    continuation = tokenizer.continuation_table()
    special_table = tf.constant(
        [i in specials for i in range(tokenizer.vocabulary_size)], tf.bool
    )

    def words(ids: tf.RaggedTensor) -> tf.RaggedTensor:
        # [B, (T)] -> [B, (words), (pieces)]: a piece starts a new word unless it is a
        # "##" continuation right after an ordinary piece of the same row.
        flat, rows = ids.flat_values, ids.value_rowids()
        special = tf.gather(special_table, flat)
        row_start = tf.concat([[True], rows[1:] != rows[:-1]], 0)
        previous_special = tf.concat([[True], special[:-1]], 0)
        starts = ~tf.gather(continuation, flat) | special | previous_special | row_start
        word_ids = tf.cumsum(tf.cast(starts, tf.int64)) - 1
        pieces = tf.RaggedTensor.from_value_rowids(flat, word_ids)
        words_per_row = tf.math.segment_sum(tf.cast(starts, tf.int64), rows)
        return tf.RaggedTensor.from_row_lengths(pieces, words_per_row)

    def pack_and_mask(batch_number, batch):
        a_ids, a_lengths, b_ids, b_lengths, nsp_label = batch
        a = tf.RaggedTensor.from_row_lengths(a_ids, a_lengths)
        b = tf.RaggedTensor.from_row_lengths(b_ids, b_lengths)
        segments = [a, b] if config.nsp else [a]
        ids, segment_ids = text.combine_segments(
            segments,
            start_of_sequence_id=tokenizer.cls_id,
            end_of_segment_id=tokenizer.sep_id,
        )
        ids = tf.cast(ids, tf.int32)
        batch_selector, chooser = choosers(batch_number)
        if config.whole_word_mask:
            masked, positions, mask_ids = text.mask_language_model(
                words(ids), batch_selector, chooser, axis=1
            )
            # A word may push the choice past P slots; pieces without a slot are put
            # back as they were, so nothing is corrupted that the loss cannot see.
            dense_masked, _ = text.pad_model_inputs(masked, seq_len)
            dense_ids, _ = text.pad_model_inputs(ids, seq_len)
            kept = positions[:, :max_predictions]
            rows = tf.cast(kept.value_rowids(), tf.int64)
            predicted = (
                tf.scatter_nd(
                    tf.stack([rows, tf.cast(kept.flat_values, tf.int64)], 1),
                    tf.ones_like(rows, tf.int32),
                    tf.shape(dense_ids, out_type=tf.int64),
                )
                > 0
            )
            token_ids = tf.where(predicted, dense_masked, dense_ids)
            padding_mask = tf.cast(dense_ids != tokenizer.pad_id, tf.int32)
            positions, mask_ids = kept, mask_ids[:, :max_predictions]
        else:
            masked, positions, mask_ids = text.mask_language_model(
                ids, batch_selector, chooser
            )
            token_ids, padding_mask = text.pad_model_inputs(masked, seq_len)
        segment_ids, _ = text.pad_model_inputs(tf.cast(segment_ids, tf.int32), seq_len)
        mask_positions, mask_weights = text.pad_model_inputs(
            tf.cast(positions, tf.int32), max_predictions
        )
        mask_ids, _ = text.pad_model_inputs(
            tf.cast(mask_ids, tf.int32), max_predictions
        )
        inputs = {
            "token_ids": token_ids,  # (B, T)
            "segment_ids": segment_ids,  # (B, T)
            "padding_mask": tf.cast(padding_mask, tf.int32),  # (B, T)
            "mask_positions": mask_positions,  # (B, P)
        }
        targets = {"mask_ids": mask_ids}  # (B, P)
        if config.nsp:
            targets["nsp_labels"] = nsp_label  # (B,)
        return inputs, targets, {"mask_weights": tf.cast(mask_weights, tf.float32)}

    return pack_and_mask


def pretraining_dataset(
    files: Iterable[str] | str,
    tokenizer: BertTokenizer,
    seq_len: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    nsp: bool = True,
    *,
    config: DataConfig | None = None,
    split: str = "all",
    repeat: bool = False,
    shuffle_buffer: int = 2048,
    drop_remainder: bool = False,
    corpus_format: str = "auto",
    stats: CorpusStats | None = None,
    resume_pass: int = 0,
    shard: tuple[int, int] | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> tf.data.Dataset:
    """A tf.data pipeline from raw corpus files to masked pretraining batches.

    Elements are `(inputs, targets, sample_weights)`: inputs hold `token_ids`,
    `segment_ids`, `padding_mask` (B, T) and `mask_positions` (B, P); targets hold
    `mask_ids` (B, P) and, with NSP, `nsp_labels` (B,); sample weights hold
    `mask_weights` (B, P), 0 for unused prediction slots. All int32 but the weights
    (float32); with `drop_remainder` every shape is static (what TPUs and XLA need).

    Args:
        files: corpus files, directories or globs.
        tokenizer: the `BertTokenizer` to use.
        seq_len, nsp: shorthand for the same fields of `config`.
        batch_size: examples per batch.
        seed: seeds pairs, shuffling and masks.
        config: a full `DataConfig` (overrides `seq_len` and `nsp`).
        split: "all", "train" (documents not held out) or "held_out".
        repeat: pass over the corpus forever, drawing new pairs and masks each pass.
        shuffle_buffer: instances shuffled together (0 keeps corpus order).
        drop_remainder: static batch size (for XLA and TPUs).
        corpus_format: see `read_documents`.
        stats: counts to update while reading (a kept corpus is read, and
            counted, once).
        resume_pass: the pass over the corpus to start at: a resumed run that
            cannot replay its stream (`training.pretrain`) gets fresh pairs and
            masks from there instead of repeating the first ones
            (the held-out split is unchanged); without `repeat`, the one pass made.
        shard: (index, count): read only every count-th file from the index-th, as
            worker `index` of `count` does; pairs and masks are drawn from seeds of
            their own, and the held-out split is the same as for the whole corpus.
        cache_bytes: a corpus (the split's documents) whose tokenized ids fit in
            this many bytes is read and tokenized once and kept for later passes
            (64 MiB, about 16M word pieces, by default; 0 reads every pass). A
            larger one streams: memory does not grow with the corpus. The stream
            is the same either way.
    """
    config = config or DataConfig(seq_len=seq_len, nsp=nsp)
    select = _selector(split, config.held_out, seed)
    if config.seq_len < 8:
        raise KblError("seq_len must be at least 8")
    stats = stats if stats is not None else CorpusStats()
    documents = _tokenized_documents(
        _shard_files(files, shard),
        tokenizer,
        corpus_format,
        stats,
        select,
        text_room(config.seq_len, config.nsp),
        cache_bytes=cache_bytes,
    )
    # A worker's share draws from seeds of its own (the whole corpus keeps the
    # plain seed, so one process reproduces the runs made before sharding).
    stream = seed if shard is None else f"{seed}/{shard[0]}"

    def instances():
        end = 1 << 62 if repeat else resume_pass + 1
        for pass_index in range(resume_pass, end):
            rng = random.Random(f"{stream}:{pass_index}")
            builder = InstanceBuilder(
                config.seq_len,
                rng,
                config.short_seq_prob,
                config.nsp,
                config.document_pool,
            )
            yield from builder.arrays(documents())

    def batches():
        # Shuffled and batched here, not by tf.data: an element per instance cost
        # more than all the rest of the pipeline (tf.data's per-element overhead
        # held it to about 270k tokens/s); a batch is one element of flat ids and
        # row lengths. The buffer is seeded, so the stream repeats for a seed.
        shuffle = random.Random(f"{stream}:{resume_pass}:shuffle")
        buffer: list[tuple] = []
        batch: list[tuple] = []
        stream_of = iter(instances())
        while True:
            item = next(stream_of, None)
            if item is not None and shuffle_buffer:
                buffer.append(item)
                if len(buffer) < shuffle_buffer:
                    continue
            if shuffle_buffer and buffer:
                k = shuffle.randrange(len(buffer))
                buffer[k], buffer[-1] = buffer[-1], buffer[k]
                item = buffer.pop()
            if item is None:
                break
            batch.append(item)
            if len(batch) == batch_size:
                yield _flat_batch(batch)
                batch = []
        if batch and not drop_remainder:
            yield _flat_batch(batch)

    ds = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec([None], tf.int32),  # A's ids, all rows
            tf.TensorSpec([None], tf.int32),  # A's row lengths
            tf.TensorSpec([None], tf.int32),  # B's ids
            tf.TensorSpec([None], tf.int32),  # B's row lengths
            tf.TensorSpec([None], tf.int32),  # NSP labels
        ),
    )
    draw_seed = seed + 7919 * resume_pass
    if shard is not None:
        draw_seed += 104_729 * (shard[0] + 1)
    # Each batch is masked from seeds of its own (its number in the stream), so the
    # batches are masked in parallel and the stream is the same for a seed whatever
    # else ran in the process.
    ds = ds.enumerate().map(
        _masker(tokenizer, config, draw_seed),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if drop_remainder:
        ds = ds.map(_static_shapes(batch_size, config))
    return ds.prefetch(tf.data.AUTOTUNE)


def _flat_batch(batch: list[tuple]) -> tuple:
    """(A ids, A lengths, B ids, B lengths, labels) of a list of array instances."""
    a = [a for a, _, _ in batch]
    b = [b for _, b, _ in batch]
    return (
        np.concatenate(a),
        np.fromiter(map(len, a), np.int32, len(batch)),
        np.concatenate(b),
        np.fromiter(map(len, b), np.int32, len(batch)),
        np.fromiter((label for _, _, label in batch), np.int32, len(batch)),
    )


def _static_shapes(batch_size: int, config: DataConfig):
    """Pins every shape of a batch: (B, T), (B, P) and (B,)."""

    def pin(tensor):
        shape = [batch_size] + tensor.shape.as_list()[1:]
        return tf.ensure_shape(tensor, shape)

    def apply(inputs, targets, weights):
        return tuple(
            {k: pin(v) for k, v in part.items()} for part in (inputs, targets, weights)
        )

    return apply


def corpus_tokenizer(
    files,
    corpus_format: str,
    vocab: str | None,
    vocabulary_size: int,
    lowercase: bool,
    log: Callable[[str], None] = print,
) -> BertTokenizer:
    """The tokenizer of a run: `vocab` read, or a vocabulary of `vocabulary_size`
    learned from the corpus when `vocab` is None."""
    from keras_bert_lite.data.corpus import read_documents
    from keras_bert_lite.text import learn_vocabulary, read_vocabulary

    if vocab is not None:
        return BertTokenizer(read_vocabulary(vocab), lowercase)
    files = expand_paths(files)
    log(
        f"learning a {vocabulary_size}-token WordPiece vocabulary from "
        f"{len(files)} file(s) ..."
    )
    stats = CorpusStats()
    tokens = learn_vocabulary(
        (s for doc in read_documents(files, corpus_format, stats) for s in doc),
        vocabulary_size,
        lowercase=lowercase,
    )
    log(
        f"vocabulary: {len(tokens)} tokens from {stats.documents} documents, "
        f"{stats.sentences} sentences"
    )
    return BertTokenizer(tokens, lowercase)


def require_pairs(
    files,
    tokenizer: BertTokenizer,
    config: DataConfig,
    corpus_format: str = "auto",
    sample: int = 1000,
) -> None:
    """Raises KblError when next-sentence prediction could only learn NotNext.

    A true next segment exists only in a document of two or more sentences (or of
    one sentence too long for one example, which is cut into consecutive pieces). If
    none of the first `sample` documents has one, every pair would be NotNext and
    the NSP head would learn a constant: the mistake of a file with a blank line
    after every sentence, or a JSONL file of one-sentence records.
    """
    documents = _tokenized_documents(
        _shard_files(files, None),
        tokenizer,
        corpus_format,
        CorpusStats(),
        _selector("all", 0.0, 0),
        text_room(config.seq_len, config.nsp),
    )
    seen = 0
    for doc in documents():
        if len(doc) > 1:
            return
        seen += 1
        if seen >= sample:
            break
    if seen:
        raise KblError(
            f"{', '.join(expand_paths(files))}: "
            + (f"all {seen}" if seen < sample else f"the first {seen}")
            + " document(s) hold a single sentence, so next-sentence prediction "
            "has no true next sentence to learn from; keep a document's sentences "
            "together (one per line, a blank line only between documents) or pass "
            "--no-nsp"
        )


def count_instances(
    files,
    tokenizer: BertTokenizer,
    config: DataConfig,
    seed: int = 0,
    split: str = "all",
    corpus_format: str = "auto",
) -> int:
    """How many instances one pass over the corpus yields (for epochs -> steps)."""
    documents = _tokenized_documents(
        _shard_files(files, None),
        tokenizer,
        corpus_format,
        CorpusStats(),
        _selector(split, config.held_out, seed),
        text_room(config.seq_len, config.nsp),
    )
    builder = InstanceBuilder(
        config.seq_len,
        random.Random(f"{seed}:0"),
        config.short_seq_prob,
        config.nsp,
        config.document_pool,
    )
    return sum(1 for _ in builder(documents()))
