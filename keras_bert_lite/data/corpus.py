"""Streaming corpus readers: files -> documents (lists of sentences).

Formats (chosen per file; `format="auto"` decides by extension and a look at the text):
- "bert": one sentence per line, a blank line between documents (the original BERT
  format).
- "jsonl": one JSON object per line whose "text" field is a document.
- "text": plain text; blank lines separate documents and the reader splits sentences,
  English (. ! ? before a capital) and Chinese (。！？) alike.

Nothing holds the whole corpus: documents are yielded as they are read. `.gz` files are
read transparently; paths may be files, directories (all files below, sorted) or globs.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import logging
import os
import re
from collections.abc import Iterable, Iterator

from keras_bert_lite.errors import KblError
from keras_bert_lite.io import json_lines, open_binary

log = logging.getLogger("keras_bert_lite")

FORMATS = ("auto", "bert", "jsonl", "text")


@dataclasses.dataclass
class CorpusStats:
    """Counts kept while reading, for the progress report and for warnings."""

    files: int = 0
    documents: int = 0
    sentences: int = 0
    empty_documents: int = 0
    replaced_bytes_lines: dict[str, int] = dataclasses.field(default_factory=dict)


def _visible_files(directory: str) -> Iterator[str]:
    """Files below `directory`, hidden ones (.name) and those in hidden folders
    (.git, .ipynb_checkpoints) left out, as a shell glob leaves them out."""
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (os.path.join(root, n) for n in names if not n.startswith("."))


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files named by `paths` (files, directories, globs), in a stable order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            found = sorted(_visible_files(path))
            if not found:
                raise KblError(f"{path}: directory holds no files")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        elif glob.has_magic(path):
            found = sorted(
                p for p in glob.glob(path, recursive=True) if os.path.isfile(p)
            )
            if not found:
                raise KblError(f"{path}: pattern matches no files")
            files.extend(found)
        else:
            raise KblError(f"{path}: no such file or directory")
    if not files:
        raise KblError("no corpus files given")
    # A file named twice ("--corpus data/ data/a.txt") is read once: twice would
    # weigh it double and could put one document on both sides of the held-out split.
    unique: dict[str, str] = {}
    for file in files:
        unique.setdefault(os.path.realpath(file), file)
    if len(unique) < len(files):
        log.warning(
            "%d corpus file(s) named more than once are read once",
            len(files) - len(unique),
        )
    return list(unique.values())


def _open_lines(path: str, stats: CorpusStats) -> Iterator[tuple[int, str]]:
    """(line number, text) pairs; undecodable bytes are replaced and counted."""
    bad = 0
    try:
        with open_binary(path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = raw.decode("utf-8", errors="replace")
                    bad += 1
                if number == 1:  # a byte-order mark (Windows editors) is not text
                    line = line.removeprefix("\ufeff")
                yield number, line.replace("\x00", " ").rstrip("\r\n")
    except (OSError, EOFError) as e:
        raise KblError(f"{path}: cannot read ({e})") from None
    finally:
        if bad:
            stats.replaced_bytes_lines[path] = bad
            log.warning(
                "%s: %d line(s) were not valid UTF-8; bad bytes replaced by U+FFFD",
                path,
                bad,
            )


def detect_format(path: str) -> str:
    """Guesses the format of one file from its name and its first lines."""
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    lines = []
    for _, line in _open_lines(path, CorpusStats()):
        if line.strip():
            lines.append(line)
        if len(lines) >= 200:
            break
    if not lines:
        return "bert"
    # Paragraph-per-line text has lines holding several sentences; the BERT format
    # holds one sentence per line.
    multi = sum(len(split_sentences(line)) > 1 for line in lines)
    return "text" if multi > 0.2 * len(lines) else "bert"


_ABBREVIATIONS = frozenset(
    "a.m adm apr aug capt col dec dr e.g etc feb fig gen gov hon i.e jan jr jul jun lt "
    "maj mar messrs mr mrs ms no nov oct p.m prof rep rev sen sep sept sr st u.s u.s.a "
    "vs".split()
)
# A sentence ends at . ! ? (plus closing quotes or brackets) before whitespace and a
# capital letter or digit (optionally behind an opening quote), at Chinese 。！？
# whatever comes before them (“好”。 50％。 （图）。), or at ! ? after a Chinese
# character (Chinese typed with ASCII punctuation).
_LATIN_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9])")
_CJK_END = re.compile(r"(?:[。！？]|(?<=[\u2e80-\u9fff])[!?])[。！？!?]*[”’」』）)]*")


def split_sentences(paragraph: str) -> list[str]:
    """Splits one paragraph into sentences (English and Chinese punctuation)."""
    ends = []
    for match in _LATIN_END.finditer(paragraph):
        if paragraph[match.start()] == ".":
            word = paragraph[: match.start()].rsplit(None, 1)[-1:] or [""]
            word = word[0].lstrip("\"'“‘([").lower()
            # "Mr. Smith", "J. Doe": a period after an abbreviation or an initial
            # ends no sentence.
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        ends.append(match.end())
    ends += [match.end() for match in _CJK_END.finditer(paragraph)]
    sentences, start = [], 0
    for end in sorted(set(ends)):
        piece = paragraph[start:end].strip()
        if piece:
            sentences.append(piece)
        start = end
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def _documents_bert(path: str, stats: CorpusStats) -> Iterator[list[str]]:
    doc: list[str] = []
    for _, line in _open_lines(path, stats):
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def _documents_text(path: str, stats: CorpusStats) -> Iterator[list[str]]:
    paragraph: list[str] = []
    for _, line in _open_lines(path, stats):
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:
            yield split_sentences(" ".join(paragraph))
            paragraph = []
    if paragraph:
        yield split_sentences(" ".join(paragraph))


def _documents_jsonl(path: str, stats: CorpusStats) -> Iterator[list[str]]:
    lines = _open_lines(path, stats)
    for number, record in json_lines(path, lines, '{"text": "..."}'):
        if not isinstance(record.get("text"), str):
            raise KblError(
                f"{path}:{number}: expected an object with a string 'text' field"
            )
        sentences = []
        for paragraph in record["text"].splitlines():
            sentences.extend(split_sentences(paragraph))
        yield sentences


_READERS = {"bert": _documents_bert, "text": _documents_text, "jsonl": _documents_jsonl}


def read_documents(
    paths: Iterable[str] | str,
    format: str = "auto",
    stats: CorpusStats | None = None,
) -> Iterator[list[str]]:
    """Yields documents, each a list of sentence strings, streaming file by file.

    Empty documents are skipped and counted in `stats.empty_documents`.

    Args:
        paths: files, directories or glob patterns; `.gz` is decompressed on the fly.
        format: "auto", "bert", "jsonl" or "text" (see the module docstring).
        stats: counts to update while reading (optional).
    """
    files = expand_paths(paths)
    for _, doc in read_indexed_documents(list(enumerate(files)), format, stats, 1):
        yield doc


def read_indexed_documents(
    files: list[tuple[int, str]],
    format: str = "auto",
    stats: CorpusStats | None = None,
    cycle: int = 4,
) -> Iterator[tuple[tuple[int, int], list[str]]]:
    """Yields `((file number, document number in that file), sentences)`, reading
    `cycle` files at a time and taking a document from each in turn.

    Interleaving mixes shards that are each about one thing (a year, a source)
    before the shuffle buffer sees them; the (file, document) key names a document
    the same way whichever worker reads it and in whatever order, which is what
    the held-out split hashes.

    Args:
        files: (file number, path) pairs: the numbers are positions in the whole
            corpus, so a worker reading a share of the files keys them the same.
        format, stats: as for `read_documents`.
        cycle: files open at once (1 reads them one after another).
    """
    if format not in FORMATS:
        raise KblError(
            f"unknown corpus format '{format}': choose one of {', '.join(FORMATS)}"
        )
    stats = stats if stats is not None else CorpusStats()

    def documents(number: int, path: str):
        stats.files += 1
        reader = _READERS[detect_format(path) if format == "auto" else format]
        index = 0
        for doc in reader(path, stats):
            doc = [s for s in doc if s.strip()]
            if not doc:
                stats.empty_documents += 1
                continue
            stats.documents += 1
            stats.sentences += len(doc)
            yield (number, index), doc
            index += 1

    waiting = iter(files)
    active = [documents(*f) for f in itertools.islice(waiting, max(1, cycle))]
    while active:
        for reader in list(active):
            item = next(reader, None)
            if item is None:
                active.remove(reader)
                following = next(waiting, None)
                if following is not None:
                    active.append(documents(*following))
                continue
            yield item


def check_encoding(path: str, sample: int = 1 << 16) -> None:
    """Raises KblError when a file does not look like UTF-8 text.

    A few undecodable lines are replaced while reading (and counted); a file that is
    UTF-16, binary, or mostly in another encoding would only train on U+FFFD, so it
    is refused up front, naming the file and the fix.
    """
    try:
        with open_binary(path) as f:
            head = f.read(sample + 1)
    except (OSError, EOFError) as e:
        raise KblError(f"{path}: cannot read ({e})") from None
    truncated = len(head) > sample
    head = head[:sample]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise KblError(
            f"{path}: UTF-16 text, not UTF-8; convert it, e.g. "
            "`iconv -f utf-16 -t utf-8 FILE > FILE.utf8`"
        )
    nuls = head.count(b"\x00")
    if nuls > max(8, len(head) // 100):
        raise KblError(
            f"{path}: holds {nuls} NUL bytes in its first "
            f"{len(head)} bytes: a binary file (or UTF-16), not UTF-8 text"
        )
    lines = [line for line in head.split(b"\n") if line.strip()]
    if truncated and lines:
        lines.pop()  # may end inside a character
    bad = [n for n, line in enumerate(lines, 1) if not _is_utf8(line)]
    if lines and len(bad) * 2 > len(lines):
        raise KblError(
            f"{path}:{bad[0]}: not UTF-8 text ({len(bad)} of the first "
            f"{len(lines)} lines are not); convert it, e.g. "
            "`iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
        )


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def require_text(paths: Iterable[str] | str, format: str = "auto") -> None:
    """Raises KblError unless every file is UTF-8 text and the corpus yields at least
    one non-empty document."""
    files = expand_paths(paths)
    for path in files:
        check_encoding(path)
    if next(read_documents(files, format), None) is None:
        raise KblError(
            f"{', '.join(files)}: the corpus holds no text (empty or blank "
            "lines only); point --corpus at files with sentences in them"
        )
