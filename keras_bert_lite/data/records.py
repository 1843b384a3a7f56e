"""Masked pretraining examples prepared offline, in TFRecord shards.

Dynamic masking (`pretraining_dataset`) builds pairs and masks while training, in
Python on the host. A TPU pod, or a cluster whose hosts have little CPU to spare,
reads prepared examples instead: `write_records` runs the same pipeline
`dupe_factor` times over the corpus (new pairs and new masks each time, the static
masking of google-research/bert's create_pretraining_data.py) and writes the
examples, and `records_dataset` reads them back as the same batches.

The features are BERT's own (`input_ids`, `input_mask`, `segment_ids`,
`masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`,
`next_sentence_labels`, int64 but the float weights), so shards written by Google's
script read here too, given its vocabulary with [PAD] [UNK] [CLS] [SEP] [MASK] at
ids 0-4.

    DIR/prepare.json                    what was prepared from what, and counts
    DIR/vocab.txt                       the vocabulary the ids refer to
    DIR/train-00000-of-00008.tfrecord   training examples, shuffled over shards
    DIR/held_out.tfrecord               the held-out documents, masked once
"""

from __future__ import annotations

import glob
import os
import random
import time
from collections.abc import Callable, Iterable

import tensorflow as tf

from keras_bert_lite.config import DataConfig
from keras_bert_lite.errors import KblError
from keras_bert_lite.io import atomic_path, read_json, write_json
from keras_bert_lite.text.tokenizer import BertTokenizer

MANIFEST = "prepare.json"
HELD_OUT = "held_out.tfrecord"


def _example(inputs: dict, targets: dict, weights: dict, i: int) -> bytes:
    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    nsp = targets.get("nsp_labels")
    features = {
        "input_ids": ints(inputs["token_ids"][i]),
        "input_mask": ints(inputs["padding_mask"][i]),
        "segment_ids": ints(inputs["segment_ids"][i]),
        "masked_lm_positions": ints(inputs["mask_positions"][i]),
        "masked_lm_ids": ints(targets["mask_ids"][i]),
        "masked_lm_weights": tf.train.Feature(
            float_list=tf.train.FloatList(value=weights["mask_weights"][i])
        ),
        # Without NSP the label is 0 (IsNext), as single segments are packed.
        "next_sentence_labels": ints([int(nsp[i]) if nsp is not None else 0]),
    }
    return tf.train.Example(
        features=tf.train.Features(feature=features)
    ).SerializeToString()


def require_new(out: str) -> None:
    """Raises KblError when `out` already holds prepared records (kbl prepare
    checks before it learns a vocabulary, which takes minutes on a large corpus)."""
    if os.path.exists(os.path.join(out, MANIFEST)):
        raise KblError(f"{out}: already holds prepared records; choose another --out")


def write_records(
    files: Iterable[str] | str,
    tokenizer: BertTokenizer,
    out: str,
    config: DataConfig,
    *,
    dupe_factor: int = 5,
    shards: int = 8,
    seed: int = 0,
    corpus_format: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Writes `dupe_factor` masked passes over the corpus into `shards` TFRecord
    files (examples dealt to shards at random), the held-out share into
    `held_out.tfrecord`, the vocabulary and `prepare.json`.

    Every file is written under a temporary name and renamed into place, and
    `prepare.json` last: a directory with a manifest is complete.

    Returns:
        The manifest (also in DIR/prepare.json).
    """
    from keras_bert_lite.data.corpus import expand_paths
    from keras_bert_lite.data.pretraining import pretraining_dataset

    if dupe_factor < 1 or shards < 1:
        raise KblError("--dupe-factor and --shards must be at least 1")
    files = expand_paths(files)
    require_new(out)
    os.makedirs(out, exist_ok=True)
    started = time.time()
    names = [f"train-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    counts = [0] * shards
    rng = random.Random(f"{seed}:shards")
    tokens = 0

    def batches(split: str, passes: range):
        for pass_index in passes:
            yield from pretraining_dataset(
                files,
                tokenizer,
                batch_size=256,
                seed=seed,
                config=config,
                split=split,
                corpus_format=corpus_format,
                resume_pass=pass_index,
            ).as_numpy_iterator()

    with _atomic_writers([os.path.join(out, n) for n in names]) as writers:
        for pass_index in range(dupe_factor):
            for inputs, targets, weights in batches(
                "train", range(pass_index, pass_index + 1)
            ):
                for i in range(len(inputs["token_ids"])):
                    k = rng.randrange(shards)
                    writers[k].write(_example(inputs, targets, weights, i))
                    counts[k] += 1
                    tokens += int(inputs["padding_mask"][i].sum())
            log(
                f"pass {pass_index + 1}/{dupe_factor}: {sum(counts):,} examples "
                f"({time.time() - started:.0f}s)"
            )
    held_out = 0
    if config.held_out > 0:
        with _atomic_writers([os.path.join(out, HELD_OUT)]) as (writer,):
            for inputs, targets, weights in batches("held_out", range(1)):
                for i in range(len(inputs["token_ids"])):
                    writer.write(_example(inputs, targets, weights, i))
                    held_out += 1
    tokenizer.save(out)
    manifest = {
        "kbl_records": 1,
        "data": config.to_dict(),
        "seed": seed,
        "dupe_factor": dupe_factor,
        "corpus": [os.path.abspath(f) for f in files],
        "corpus_format": corpus_format,
        "shards": dict(zip(names, counts, strict=True)),
        "examples": sum(counts),
        "tokens": tokens,
        "held_out_examples": held_out,
        "seconds": round(time.time() - started, 1),
    }
    write_json(os.path.join(out, MANIFEST), manifest)
    return manifest


class _atomic_writers:
    """TFRecord writers on temporary names, renamed into place on success."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self.contexts = [atomic_path(p, suffix=".tfrecord") for p in paths]

    def __enter__(self):
        temporaries = [c.__enter__() for c in self.contexts]
        self.writers = [tf.io.TFRecordWriter(t) for t in temporaries]
        return self.writers

    def __exit__(self, *error):
        for writer in self.writers:
            writer.close()
        for context in reversed(self.contexts):
            context.__exit__(*error)
        return False


def read_manifest(directory: str) -> dict:
    """The prepare.json of a records directory, checked."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise KblError(
            f"{directory}: no {MANIFEST}; prepare records with `kbl prepare` (or "
            "the directory is incomplete)"
        )
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("kbl_records") != 1:
        raise KblError(f"{path}: not a records manifest of this version")
    DataConfig.from_dict(manifest.get("data"), f"{path}: data")
    shards = manifest.get("shards")
    if not isinstance(shards, dict) or not shards:
        raise KblError(f"{path}: 'shards' must name the record files")
    for name in shards:
        # Names are files inside the directory, never paths out of it.
        if not isinstance(name, str) or name != os.path.basename(name):
            raise KblError(f"{path}: shard {name!r} is not a file name")
    return manifest


def record_files(directory: str, split: str = "train") -> list[str]:
    """The shard files of a records directory (train) or its held-out file."""
    if split == "held_out":
        path = os.path.join(directory, HELD_OUT)
        return [path] if os.path.isfile(path) else []
    manifest = read_manifest(directory)
    files = [os.path.join(directory, n) for n in sorted(manifest["shards"])]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise KblError(f"{missing[0]}: shard named in {MANIFEST} is missing")
    return files


def records_dataset(
    files: list[str] | str,
    config: DataConfig,
    batch_size: int,
    *,
    seed: int = 0,
    repeat: bool = False,
    shuffle_buffer: int = 4096,
    drop_remainder: bool = False,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Prepared examples as `pretraining_dataset` batches (same names, same dtypes).

    Args:
        files: TFRecord files, or a glob (Google's shards too).
        config: the data config they were prepared with (seq_len, max_predictions,
            nsp).
        batch_size: examples per batch.
        seed: shuffling.
        repeat: cycle over the files forever (shuffled anew each pass).
        shuffle_buffer: examples shuffled together.
        drop_remainder: static batch size (for XLA and TPUs).
        shard: (index, count): read every count-th file from the index-th.
    """
    if isinstance(files, str):
        files = sorted(glob.glob(files)) or [files]
    if shard is not None:
        index, count = shard
        if count > len(files):
            raise KblError(
                f"cannot shard {len(files)} record file(s) over {count} workers; "
                "prepare at least as many --shards as workers"
            )
        files = files[index::count]
    seq_len, predictions = config.seq_len, config.max_predictions
    spec = {
        "input_ids": tf.io.FixedLenFeature([seq_len], tf.int64),
        "input_mask": tf.io.FixedLenFeature([seq_len], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([seq_len], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([predictions], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([predictions], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([predictions], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }

    def parse(serialized):
        f = tf.io.parse_example(serialized, spec)  # (B, ...) for a batch of records
        inputs = {
            "token_ids": tf.cast(f["input_ids"], tf.int32),
            "segment_ids": tf.cast(f["segment_ids"], tf.int32),
            "padding_mask": tf.cast(f["input_mask"], tf.int32),
            "mask_positions": tf.cast(f["masked_lm_positions"], tf.int32),
        }
        targets = {"mask_ids": tf.cast(f["masked_lm_ids"], tf.int32)}
        if config.nsp:
            targets["nsp_labels"] = tf.cast(f["next_sentence_labels"][:, 0], tf.int32)
        return inputs, targets, {"mask_weights": f["masked_lm_weights"]}

    names = tf.data.Dataset.from_tensor_slices(files)
    if repeat:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        names = names.repeat()
    # Several files read at once (deterministic order for a seed); each worker's
    # files were chosen above, so the pipeline needs no auto-sharding.
    ds = names.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shuffle_buffer and repeat:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
