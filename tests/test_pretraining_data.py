"""The pretraining pipeline: masking statistics, NSP pairs, packing."""

import itertools
import random

import numpy as np
import pytest

from keras_bert_lite.config import DataConfig
from keras_bert_lite.data.pretraining import (
    IS_NEXT,
    NOT_NEXT,
    InstanceBuilder,
    pretraining_dataset,
)

SEQ_LEN = 128


def collect(dataset, batches=None):
    rows = {
        "token_ids": [],
        "segment_ids": [],
        "padding_mask": [],
        "mask_positions": [],
        "mask_ids": [],
        "mask_weights": [],
        "nsp_labels": [],
    }
    for i, (x, y, w) in enumerate(dataset):
        if batches is not None and i >= batches:
            break
        for key in ("token_ids", "segment_ids", "padding_mask", "mask_positions"):
            rows[key].append(x[key].numpy())
        rows["mask_ids"].append(y["mask_ids"].numpy())
        rows["nsp_labels"].append(y["nsp_labels"].numpy())
        rows["mask_weights"].append(w["mask_weights"].numpy())
    return {k: np.concatenate(v) for k, v in rows.items()}


@pytest.fixture(scope="module")
def one_pass(sotu_subset, sotu_tokenizer):
    ds = pretraining_dataset(
        sotu_subset, sotu_tokenizer, seq_len=SEQ_LEN, batch_size=64, seed=3
    )
    return collect(ds)


@pytest.fixture(scope="module")
def originals(sotu_subset, sotu_tokenizer):
    """The same pass with nothing masked: the packed original tokens."""
    config = DataConfig(seq_len=SEQ_LEN, mask_token_rate=0.0, random_token_rate=0.0)
    ds = pretraining_dataset(
        sotu_subset, sotu_tokenizer, batch_size=64, seed=3, config=config
    )
    return collect(ds)


def test_masking_statistics_over_100k_real_tokens(one_pass, originals, sotu_tokenizer):
    tok = sotu_tokenizer
    orig = originals["token_ids"]
    # Same pairs and positions in both passes: only the replacement values differ.
    np.testing.assert_array_equal(
        one_pass["mask_positions"], originals["mask_positions"]
    )
    special = np.isin(orig, [tok.pad_id, tok.cls_id, tok.sep_id])
    real = (one_pass["padding_mask"] == 1) & ~special
    assert real.sum() >= 100_000

    weights = one_pass["mask_weights"] > 0
    rows = np.nonzero(weights)[0]
    positions = one_pass["mask_positions"][weights]
    chosen_original = orig[rows, positions]
    chosen_now = one_pass["token_ids"][rows, positions]
    share = len(positions) / real.sum()
    assert abs(share - 0.15) <= 0.01, share
    # Never a special token or padding.
    assert not np.isin(chosen_original, [tok.pad_id, tok.cls_id, tok.sep_id]).any()
    assert (one_pass["padding_mask"][rows, positions] == 1).all()
    # Labels are the original tokens at the chosen positions.
    np.testing.assert_array_equal(one_pass["mask_ids"][weights], chosen_original)
    # 80 / 10 / 10. A random replacement may draw the original token (1/V of the time).
    masked = np.mean(chosen_now == tok.mask_id)
    unchanged = np.mean(chosen_now == chosen_original)
    random_share = 1 - masked - unchanged
    assert abs(masked - 0.8) <= 0.02, masked
    assert abs(unchanged - 0.1) <= 0.02, unchanged
    assert abs(random_share - 0.1) <= 0.02, random_share
    # Nothing outside the chosen positions changed.
    untouched = np.ones_like(orig, bool)
    untouched[rows, positions] = False
    np.testing.assert_array_equal(one_pass["token_ids"][untouched], orig[untouched])


def test_packing_segments_and_separators(originals, sotu_tokenizer):
    tok = sotu_tokenizer
    ids, segs, mask = (
        originals[k] for k in ("token_ids", "segment_ids", "padding_mask")
    )
    assert ids.shape[1] == SEQ_LEN
    for row in range(len(ids)):
        n = mask[row].sum()
        assert (mask[row, :n] == 1).all() and (mask[row, n:] == 0).all()
        assert (ids[row, n:] == tok.pad_id).all()
        assert ids[row, 0] == tok.cls_id
        seps = np.nonzero(ids[row] == tok.sep_id)[0]
        assert len(seps) == 2 and seps[1] == n - 1
        assert (segs[row, : seps[0] + 1] == 0).all()
        assert (segs[row, seps[0] + 1 : n] == 1).all()
        assert (segs[row, n:] == 0).all()


def test_is_next_share_is_half(originals):
    labels = originals["nsp_labels"]
    assert len(labels) > 1000
    assert abs(np.mean(labels == IS_NEXT) - 0.5) <= 0.03


def test_same_seed_same_masks_and_each_epoch_new_masks(
    sotu_subset, sotu_tokenizer, one_pass
):
    again = collect(
        pretraining_dataset(
            sotu_subset, sotu_tokenizer, seq_len=SEQ_LEN, batch_size=64, seed=3
        ),
        batches=20,
    )
    for key in ("token_ids", "mask_positions", "nsp_labels"):
        np.testing.assert_array_equal(again[key], one_pass[key][: len(again[key])])
    other_seed = collect(
        pretraining_dataset(
            sotu_subset, sotu_tokenizer, seq_len=SEQ_LEN, batch_size=64, seed=4
        ),
        batches=5,
    )
    assert not np.array_equal(other_seed["token_ids"], again["token_ids"][:320])

    # One continuing iterator (how training reads it): a second epoch redraws masks on
    # the same documents. Without shuffling, pass 2 starts right after pass 1.
    def unshuffled(repeat):
        return pretraining_dataset(
            sotu_subset,
            sotu_tokenizer,
            seq_len=SEQ_LEN,
            batch_size=64,
            seed=3,
            repeat=repeat,
            shuffle_buffer=0,
        )

    n = len(collect(unshuffled(False))["token_ids"])
    stream = collect(unshuffled(True), batches=2 * (n // 64) + 1)
    first, second = stream["mask_positions"][:64], stream["mask_positions"][n : n + 64]
    assert not np.array_equal(first, second)


def test_whole_word_masking_takes_all_pieces_of_a_word(sotu_subset, sotu_tokenizer):
    tok = sotu_tokenizer
    config = DataConfig(
        seq_len=SEQ_LEN,
        whole_word_mask=True,
        mask_token_rate=1.0,
        random_token_rate=0.0,
    )
    data = collect(
        pretraining_dataset(sotu_subset, tok, batch_size=64, seed=1, config=config),
        batches=10,
    )
    continuation = np.array([t.startswith("##") for t in tok.vocabulary])
    ids, weights = data["token_ids"], data["mask_weights"] > 0
    multi_piece_words = 0
    for row in range(len(ids)):
        predicted = set(data["mask_positions"][row][weights[row]].tolist())
        labels = dict(
            zip(
                data["mask_positions"][row][weights[row]].tolist(),
                data["mask_ids"][row][weights[row]].tolist(),
                strict=True,
            )
        )
        for pos in predicted:
            previous = labels.get(pos - 1, ids[row][pos - 1])
            if continuation[labels[pos]] and previous not in (tok.cls_id, tok.sep_id):
                multi_piece_words += 1
                # The piece before a predicted "##" piece is predicted too (same word),
                # unless truncation left the piece first in its segment.
                assert pos - 1 in predicted
        # Every [MASK] in the input is a predicted position (none left unlabelled).
        assert set(np.nonzero(ids[row] == tok.mask_id)[0].tolist()) <= predicted
    assert multi_piece_words > 0


def synthetic_documents(num_docs=400, seed=0):
    """Documents whose tokens encode (document, sentence): 1000 * doc + sentence."""
    rng = random.Random(seed)
    docs = []
    for d in range(num_docs):
        docs.append([[1000 * d + s] * 10 for s in range(rng.randint(3, 80))])
    return docs


def test_next_sentence_pairs_are_adjacent_or_from_another_document():
    # Sentences of 10 tokens and a target of exactly 120 make every chunk end on a
    # sentence boundary, so no truncation hides adjacency.
    builder = InstanceBuilder(
        seq_len=123, rng=random.Random(0), short_seq_prob=0.0, document_pool=8
    )
    counts = {IS_NEXT: 0, NOT_NEXT: 0}
    for a, b, label in builder(synthetic_documents()):
        counts[label] += 1
        assert len(a) + len(b) <= 120
        doc_a = {t // 1000 for t in a}
        doc_b = {t // 1000 for t in b}
        assert len(doc_a) == 1 and len(doc_b) == 1
        if label == IS_NEXT:
            assert doc_a == doc_b
            if set(a) == set(b):  # a lone last sentence, split: its two parts
                assert len(a) + len(b) == 10
            else:
                assert max(a) % 1000 + 1 == min(b) % 1000
                assert sorted(set(a + b)) == list(range(min(a), max(b) + 1))
        else:
            assert doc_a != doc_b
    share = counts[IS_NEXT] / sum(counts.values())
    assert abs(share - 0.5) <= 0.03, counts


def test_one_sentence_documents_keep_next_sentence_labels_even():
    """Half the documents are one sentence (reviews beside articles): BERT's rule
    (a lone sentence is always NotNext) gives 2/3 NotNext here. Each lone sentence
    appears in A, and its IsNext pairs are its own two parts, in order."""
    rng = random.Random(1)
    docs = []
    for d in range(400):
        if d % 2:  # one sentence of 5-30 distinct tokens
            docs.append([[1000 * d + t for t in range(rng.randint(5, 30))]])
        else:
            docs.append([[1000 * d + 100 * s] * 10 for s in range(rng.randint(3, 8))])
    builder = InstanceBuilder(
        seq_len=123, rng=random.Random(0), short_seq_prob=0.0, document_pool=8
    )
    counts = {IS_NEXT: 0, NOT_NEXT: 0}
    in_a = set()
    for a, b, label in builder(docs):
        counts[label] += 1
        d = a[0] // 1000
        in_a.add(d)
        if d % 2 and label == IS_NEXT:
            assert a + b == docs[d][0], (a, b)
            assert a and b
    share = counts[IS_NEXT] / sum(counts.values())
    assert abs(share - 0.5) <= 0.04, counts
    assert {d for d in range(1, 400, 2)} <= in_a


def test_no_nsp_packs_contiguous_full_length_segments():
    builder = InstanceBuilder(seq_len=66, rng=random.Random(0), nsp=False)
    docs = synthetic_documents(5)
    out = list(builder(docs))
    assert all(b == [] and len(a) <= 64 for a, b, _ in out)
    assert [t for a, _, _ in out for t in a] == [t for d in docs for s in d for t in s]


def test_tokenized_documents_are_each_sentence_tokenized_alone(
    sotu_subset, sotu_tokenizer
):
    """Documents are tokenized many sentences per call and cut as spans of one id
    array: each sentence must still be exactly its own tokenization, a too-long one
    in consecutive pieces of at most `max_tokens`, across tokenizer-call edges."""
    from keras_bert_lite.data.corpus import read_indexed_documents
    from keras_bert_lite.data.pretraining import Document, _tokenized_documents

    files = [(0, sotu_subset)]
    max_tokens = 40
    documents = _tokenized_documents(
        files, sotu_tokenizer, "auto", None, lambda key: key[1] < 12, max_tokens, 100
    )
    got = list(documents())
    expected = []
    for key, doc in read_indexed_documents(files):
        if key[1] >= 12:
            continue
        sentences = []
        for ids in sotu_tokenizer(doc).to_list():
            pieces = range(0, len(ids), max_tokens)
            sentences += [ids[k : k + max_tokens] for k in pieces]
        expected.append(sentences)
    assert all(isinstance(doc, Document) for doc in got)
    assert [[s.tolist() for s in doc] for doc in got] == expected
    assert any(len(s) == max_tokens for doc in expected for s in doc)
    assert sum(map(len, expected)) > 1000  # several tokenizer calls of 100


def test_array_instances_are_the_list_instances():
    """`arrays` (what the pipeline batches) and `__call__` are one stream: the same
    instances from the same draws, from `Document`s or from lists of sentences. And
    it is the stream of the list-based builder before 2026-12-06 (its digests below),
    empty documents and sentences left out without a draw: a resumed run replays its
    stream, so a change here must be deliberate."""
    import hashlib

    from keras_bert_lite.data.pretraining import Document

    docs = synthetic_documents(60, seed=2) + [[[7]], [[8, 9]]]
    docs[10:10] = [[], [[]]]
    digests = {True: "da4cb580cfc36a5e", False: "9b9630699e013316"}
    for nsp in (True, False):
        as_lists = list(InstanceBuilder(40, random.Random(5), nsp=nsp)(docs))
        documents = [Document.from_sentences(d) for d in docs]
        arrays = InstanceBuilder(40, random.Random(5), nsp=nsp).arrays(documents)
        assert [(a.tolist(), b.tolist(), y) for a, b, y in arrays] == as_lists
        assert len(as_lists) > 100
        digest = hashlib.sha256(repr(as_lists).encode()).hexdigest()[:16]
        assert digest == digests[nsp], nsp


def test_truncation_keeps_every_pair_within_seq_len(originals):
    assert (originals["padding_mask"].sum(1) <= SEQ_LEN).all()


def test_pair_truncation_cuts_the_longer_segment_at_both_ends_evenly():
    """BERT's loop: drop one token at a time from the longer segment (B on a tie),
    from its front or its back at random. The cut is computed without the loop;
    here it is checked against the loop for every small case, and the front/back
    split of the cuts is checked to be fair."""
    from keras_bert_lite.data.pretraining import _truncate_pair

    def loop_lengths(la, lb, budget):
        while la + lb > budget:
            if la > lb:
                la -= 1
            else:
                lb -= 1
        return la, lb

    rng = random.Random(0)
    front_cuts = total_cuts = 0
    for la in range(0, 25):
        for lb in range(0, 25):
            for budget in (1, 7, 20, 30):
                # Spans into a document's ids, not starting at 0.
                ids = list(range(200))
                a_span, b_span = (3, 3 + la), (100, 100 + lb)
                (a0, a1), (b0, b1) = _truncate_pair(a_span, b_span, budget, rng)
                assert 3 <= a0 <= a1 <= 3 + la and 100 <= b0 <= b1 <= 100 + lb
                a, b = ids[a0:a1], ids[b0:b1]
                original_a, original_b = ids[3 : 3 + la], ids[100 : 100 + lb]
                assert (len(a), len(b)) == loop_lengths(la, lb, budget)
                for kept, original in ((a, original_a), (b, original_b)):
                    cuts = len(original) - len(kept)
                    if not kept:
                        continue
                    start = original.index(kept[0])
                    # What is kept is one contiguous run of the original.
                    assert kept == original[start : start + len(kept)]
                    front_cuts += start
                    total_cuts += cuts
    assert total_cuts > 10_000
    assert abs(front_cuts / total_cuts - 0.5) < 0.02, front_cuts / total_cuts


def test_building_a_pipeline_leaves_the_global_random_seed_alone(
    sotu_subset, sotu_tokenizer
):
    import tensorflow as tf

    tf.random.set_seed(123)
    expected = tf.random.uniform([4]).numpy()
    tf.random.set_seed(123)
    ds = pretraining_dataset(sotu_subset, sotu_tokenizer, seq_len=SEQ_LEN, seed=9)
    next(iter(ds))
    np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), expected)


def test_a_kept_corpus_is_read_once_and_streams_as_a_read_one(
    sotu_subset, sotu_tokenizer, tmp_path
):
    """A corpus that fits `cache_bytes` is read and tokenized on the first pass only;
    later passes replay the kept documents. The batches (pairs, order, masks) must
    be those of a pipeline that reads every pass, and one over budget must stream."""
    from keras_bert_lite.data import CorpusStats, read_documents

    small = tmp_path / "twelve.txt"
    docs = list(itertools.islice(read_documents(sotu_subset), 12))
    small.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n")

    def dataset(repeat, cache_bytes, stats=None):
        return pretraining_dataset(
            str(small),
            sotu_tokenizer,
            seq_len=64,
            batch_size=32,
            seed=5,
            repeat=repeat,
            shuffle_buffer=256,
            cache_bytes=cache_bytes,
            stats=stats,
        )

    per_pass = len(collect(dataset(False, 0))["token_ids"]) // 32
    batches = 3 * per_pass + 2  # into a fourth pass
    streams, reads = {}, {}
    for name, budget in (("kept", 64 << 20), ("read", 0), ("over", 50_000)):
        stats = CorpusStats()
        streams[name] = collect(dataset(True, budget, stats), batches)
        reads[name] = stats.documents
    assert reads["kept"] == 12  # one pass read; the rest replayed
    assert reads["read"] >= 36 and reads["over"] >= 36  # read on every pass
    for name in ("kept", "over"):
        for key, rows in streams["read"].items():
            np.testing.assert_array_equal(streams[name][key], rows, err_msg=key)
    # Each pass still draws its own pairs: the second pass is not the first again.
    first = streams["kept"]["token_ids"][: 32 * per_pass]
    second = streams["kept"]["token_ids"][32 * per_pass : 64 * per_pass]
    assert not np.array_equal(first, second)
