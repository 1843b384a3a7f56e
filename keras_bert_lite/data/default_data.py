"""Built-in default data: real human-written text, never committed to the repository.

- `pretraining_corpus()` writes the prose of Python's own documentation topics
  (`pydoc_data.topics`, the text behind `help('TOPIC')`, PSF licence) as a corpus in
  the BERT format. Nothing is downloaded.
- `sentiment_dataset()` fetches the source distribution of `vaderSentiment` 3.3.2 from
  PyPI with pip (pinned version, checked against its sha256), and writes its movie
  review snippets with crowd sentiment ratings (Hutto & Gilbert, ICWSM 2014, from Pang
  & Lee's rotten tomatoes snippets; MIT licence) as a classification train/dev split.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable

from keras_bert_lite.data.corpus import split_sentences
from keras_bert_lite.errors import KblError
from keras_bert_lite.io import atomic_path

PROVENANCE = (
    "Python {version} documentation topics (module pydoc_data.topics, shipped "
    "with CPython; Python Software Foundation License)"
)


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "keras_bert_lite")


def _prose_documents() -> list[list[str]]:
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        sentences = []
        for block in re.split(r"\n\s*\n", topics[name]):
            lines = block.splitlines()
            # Prose only: skip indented code and grammar, reST underlines, short labels.
            if (
                not lines
                or lines[0].startswith((" ", "\t"))
                or re.fullmatch(r"[*=\-~^]+", lines[-1].strip())
            ):
                continue
            paragraph = " ".join(line.strip() for line in lines)
            if len(paragraph.split()) >= 4:
                sentences.extend(split_sentences(paragraph))
        if sentences:
            documents.append(sentences)
    return documents


def pretraining_corpus(
    cache_dir: str | None = None, log: Callable[[str], None] = print
) -> str:
    """Path of the built-in English pretraining corpus (`.txt.gz`, BERT format)."""
    cache_dir = cache_dir or default_cache_dir()
    version = platform.python_version()
    path = os.path.join(cache_dir, f"python-{version}-doc-topics.txt.gz")
    if not os.path.exists(path):
        documents = _prose_documents()
        text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
        with atomic_path(path) as tmp:
            with gzip.GzipFile(tmp, "wb", mtime=0) as f:
                f.write(text.encode("utf-8"))
    log(f"default data: {PROVENANCE.format(version=version)} -> {path}")
    return path


VADER = {
    "requirement": "vaderSentiment==3.3.2",
    "file": "vaderSentiment-3.3.2.tar.gz",
    "sha256": "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    "inner": "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
    "member": "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
}
SENTIMENT_PROVENANCE = (
    "movie review snippets with crowd sentiment (Hutto & Gilbert, ICWSM 2014; snippets "
    "from Pang & Lee's rotten tomatoes reviews), from the PyPI source distribution "
    "vaderSentiment 3.3.2 (sha256 5d7c06e0...), MIT licence"
)


def _fetch_vader(cache_dir: str, log: Callable[[str], None]) -> str:
    path = os.path.join(cache_dir, VADER["file"])
    if not os.path.exists(path):
        log(
            f"fetching {VADER['requirement']} from PyPI with pip (pinned version, "
            "sha256-checked)"
        )
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    VADER["requirement"],
                    "-d",
                    tmp,
                ],
                capture_output=True,
                text=True,
            )
            fetched = os.path.join(tmp, VADER["file"])
            if done.returncode != 0 or not os.path.exists(fetched):
                raise KblError(
                    f"could not fetch {VADER['requirement']} with pip (is PyPI "
                    f"reachable?): {done.stderr.strip()[-300:]}"
                )
            with atomic_path(path) as target, open(fetched, "rb") as f:
                with open(target, "wb") as out:
                    out.write(f.read())
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != VADER["sha256"]:
        os.remove(path)
        raise KblError(
            f"{path}: sha256 {digest} is not the pinned {VADER['sha256']}; "
            "the file was removed, run again to fetch it anew"
        )
    return path


def sentiment_dataset(
    cache_dir: str | None = None, log: Callable[[str], None] = print
) -> tuple[str, str]:
    """(train, dev) JSONL paths of the built-in English sentiment data.

    Labels: `pos` for a mean crowd rating above 0, `neg` below 0 (ratings of exactly
    0 are dropped); 90/10 train/dev split, shuffled with `random.Random(13)`.
    """
    cache_dir = cache_dir or default_cache_dir()
    train = os.path.join(cache_dir, "movie-snippets.train.jsonl")
    dev = os.path.join(cache_dir, "movie-snippets.dev.jsonl")
    if not (os.path.exists(train) and os.path.exists(dev)):
        archive = _fetch_vader(cache_dir, log)
        with tarfile.open(archive) as outer:
            inner = tarfile.open(
                fileobj=io.BytesIO(outer.extractfile(VADER["inner"]).read())
            )
            text = inner.extractfile(VADER["member"]).read().decode("utf-8", "replace")
        records = []
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            rating, snippet = float(parts[1]), parts[2].strip()
            if rating != 0 and snippet:
                records.append(
                    {"text": snippet, "label": "pos" if rating > 0 else "neg"}
                )
        random.Random(13).shuffle(records)
        cut = len(records) * 9 // 10
        for path, part in ((train, records[:cut]), (dev, records[cut:])):
            with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
    log(f"default data: {SENTIMENT_PROVENANCE} -> {train}, {dev}")
    return train, dev
