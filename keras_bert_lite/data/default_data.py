"""Built-in default data: real human-written text that ships with Python itself.

`pretraining_corpus()` writes the prose of Python's own documentation topics
(`pydoc_data.topics`, the text behind `help('TOPIC')`, PSF licence) as a corpus in the
BERT format. Nothing is downloaded and no corpus is committed to the repository.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
from collections.abc import Callable

from keras_bert_lite.data.corpus import split_sentences
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
