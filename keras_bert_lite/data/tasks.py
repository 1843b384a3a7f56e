"""Fine-tuning data: task files -> records -> model features (NumPy), and back.

Readers turn the files users bring into plain records; encoders turn records into the
model inputs `token_ids`, `segment_ids`, `padding_mask` (int32 [N, T]) plus the task's
targets; `merge_tagging_predictions` and `decode_squad` map predictions back to words
and to character spans of the original text.

Shape legend: N = features (rows; a long sentence or context gives several windows),
T = seq_len, K = labels.

Tokenization is batched: each encoder hands all its strings to the tokenizer in a few
large calls, because every call is an eager TensorFlow dispatch and one call per word
would cost more than the tokenization itself.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from keras_bert_lite import cjk
from keras_bert_lite.cjk import CJK_CLASS
from keras_bert_lite.errors import KblError
from keras_bert_lite.io import json_lines, open_binary

log = logging.getLogger("keras_bert_lite")

# Special ids fixed by the tokenizer (text/tokenizer.py SPECIAL_TOKENS).
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 1, 2, 3

# Strings per tokenizer call: large enough that dispatch overhead vanishes, small
# enough that one call's ragged tensors stay a few MB.
_CHUNK = 16_384

LabelIndex = Mapping[str, int] | Sequence[str]


# === File reading ===


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text without newline); bad UTF-8 is an error naming the line."""
    with open_binary(path) as f:
        try:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise KblError(
                        f"{path}:{number}: not valid UTF-8; save the file as UTF-8"
                    ) from None
                if number == 1:
                    line = line.lstrip("\ufeff")
                yield number, line.rstrip("\r\n")
        except (OSError, EOFError) as e:
            raise KblError(f"{path}: cannot read ({e})") from None


def is_squad(path: str) -> bool:
    """Whether a .json file is a SQuAD document rather than JSON lines: its first
    non-blank line is not a JSON value on its own (a pretty-printed document), or is
    an object with a `data` field."""
    for _, line in _lines(path):
        if line.strip():
            try:
                first = json.loads(line)
            except ValueError:
                return True
            return isinstance(first, dict) and "data" in first
    return False


def read_texts(path: str) -> list[str]:
    """The non-blank lines of a plain text file, one text each (`-`: standard input).

    `.gz` is read transparently; a missing file or bad UTF-8 is an error naming the
    file (and line), as for every task file.
    """
    if path == "-":
        return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    return [line for _, line in _lines(path) if line.strip()]


def _stem(path: str) -> str:
    path = str(path)
    return path[:-3] if path.endswith(".gz") else path


# === Classification ===


def _label_value(where: str, label: Any) -> str | list[str] | float:
    # bool is an int in Python, but true/false labels are almost surely a mistake.
    if isinstance(label, str):
        return label
    # Whole numbers are class ids as GLUE-style files write them ("label": 0 / 1);
    # only a number with a fraction or exponent in the file (a float) means regression.
    if isinstance(label, int) and not isinstance(label, bool):
        return str(label)
    if isinstance(label, float):
        if not math.isfinite(label):
            raise KblError(f"{where}: label {label!r} is not a finite number")
        return label
    if isinstance(label, list) and all(isinstance(x, str) and x for x in label):
        return list(label)
    raise KblError(
        f"{where}: label {label!r} must be a string, a whole number (a "
        "class), a list of strings (multi-label) or a decimal number "
        "(regression, e.g. 3.0)"
    )


def _label_kind(label: str | list[str] | float) -> str:
    if isinstance(label, str):
        return "single-label"
    return "multi-label" if isinstance(label, list) else "regression"


def _classification_record(
    where: str, record: Mapping[str, Any], require_labels: bool
) -> dict[str, Any]:
    pair = "text_a" in record or "text_b" in record
    out: dict[str, Any] = {}
    for field in ("text_a", "text_b") if pair else ("text",):
        value = record.get(field)
        if not isinstance(value, str):
            what = "missing" if value is None else f"a {type(value).__name__}"
            raise KblError(
                f"{where}: field '{field}' is {what}; each record needs a "
                "string 'text' (or 'text_a' and 'text_b') and a 'label'"
            )
        out[field] = value
    label = record.get("label")
    if label is None or label == "":
        if require_labels:
            raise KblError(
                f"{where}: missing 'label'; give every record a label (or "
                "read with require_labels=False to predict)"
            )
    else:
        out["label"] = _label_value(where, label)
    return out


def _jsonl_rows(path: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    return json_lines(path, _lines(path), '{"text": "...", "label": "..."}')


def _csv_rows(path: str, delimiter: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with open_binary(path) as raw:
        # newline="" lets the csv module handle quoted fields that hold line breaks.
        f = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        # TSV files (GLUE and the like) hold unbalanced quotes inside the text, so
        # quotes only group fields in CSV.
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        # "text, label" (a space after each comma, as people write CSV by hand):
        # the space is not part of the field, and a quote after it still quotes.
        reader = csv.DictReader(
            f,
            delimiter=delimiter,
            quoting=quoting,
            skipinitialspace=delimiter != "\t",
        )
        try:
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            if "text" not in header and not {"text_a", "text_b"} <= set(header):
                raise KblError(
                    f"{path}:1: the header must name a 'text' column (or "
                    "'text_a' and 'text_b') and a 'label' column; found "
                    f"{', '.join(header) or 'nothing'}"
                )
            for row in reader:
                if None in row:
                    raise KblError(
                        f"{path}:{reader.line_num}: more fields than the "
                        "header names; quote fields holding the delimiter"
                    )
                if not any((v or "").strip() for v in row.values()):
                    continue
                if row.get("label"):  # "neg " and "neg" are one label
                    row["label"] = row["label"].strip()
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise KblError(
                f"{path}:{reader.line_num + 1}: not valid UTF-8; save the file as UTF-8"
            ) from None
        except csv.Error as e:
            raise KblError(f"{path}:{reader.line_num}: bad CSV ({e})") from None


def read_classification(path: str, require_labels: bool = True) -> list[dict[str, Any]]:
    """Reads a (sentence-pair) classification or regression file.

    JSONL lines `{"text", "label"}` or `{"text_a", "text_b", "label"}`; `.csv`/`.tsv`
    files (optionally `.gz`) with a header naming the same columns. A label is a string,
    a list of strings (multi-label) or a number: a whole number is a class (GLUE's
    0 / 1, read as "0" / "1", as CSV/TSV labels are text), but labels that are all
    numbers, any of them with a fraction or exponent (3.5; "3.800" in STS-B's TSV),
    are regression targets, all read as floats. One file holds one kind of record and
    one kind of label.

    Args:
        path: the file.
        require_labels: raise on a record without a label (False to read inputs to
            predict on).

    Returns:
        Records `{"text", "label", "line"}` or `{"text_a", "text_b", "label", "line"}`;
        `line` is the record's line in the file, for error messages.
    """
    stem = _stem(path)
    if stem.endswith((".csv", ".tsv")):
        rows = _csv_rows(path, "\t" if stem.endswith(".tsv") else ",")
    else:
        rows = _jsonl_rows(path)
    records: list[dict[str, Any]] = []
    first_pair = None
    for number, row in rows:
        where = f"{path}:{number}"
        record = _classification_record(where, row, require_labels)
        pair = "text_a" in record
        if first_pair is None:
            first_pair = (pair, number)
        elif pair != first_pair[0]:
            this, other = "pair (text_a, text_b)", "single-text (text)"
            if not pair:
                this, other = other, this
            raise KblError(
                f"{where}: a {this} record, but line {first_pair[1]} is a "
                f"{other} record; one file holds one kind of record"
            )
        record["line"] = number
        records.append(record)
    if not records:
        raise KblError(f"{path}: holds no records")
    _scores_as_numbers(records, path)
    first_kind = None
    for record in records:
        if "label" in record:
            kind = _label_kind(record["label"])
            if first_kind is None:
                first_kind = (kind, record["line"])
            elif kind != first_kind[0]:
                raise KblError(
                    f"{path}:{record['line']}: a {kind} label, but line "
                    f"{first_kind[1]} has a {first_kind[0]} label; use one kind per "
                    "file"
                )
    return records


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _is_score(label: Any) -> bool:
    return isinstance(label, float) or (
        isinstance(label, str) and bool(_NUMBER.fullmatch(label))
    )


def _scores_as_numbers(records: list[dict[str, Any]], path: str) -> None:
    """Labels that are all numbers, any of them with a fraction or exponent (a JSON
    3.5, STS-B's "3.800" in TSV), are regression targets: they all become floats,
    whole ones too (4 beside 3.5). Whole numbers alone stay classes (GLUE's 0/1)."""
    labels = [r["label"] for r in records if "label" in r]
    if not labels or not all(_is_score(label) for label in labels):
        return
    if any(isinstance(x, float) or set(x) & set(".eE") for x in labels):
        regression_targets(records, path)


def regression_targets(records: list[dict[str, Any]], path: str) -> None:
    """Reads the labels of `records` as a regression model's targets, in place: a
    whole number (a class in a file read alone: "label": 4, or "4" in CSV) is the
    score 4.0; a label that is no number is an error naming `path` and its line."""
    for record in records:
        label = record.get("label")
        if label is None or isinstance(label, float):
            continue
        if not _is_score(label):
            raise KblError(
                f"{path}:{record.get('line', '?')}: label {label!r} is not a number; "
                "the model is a regression model, its labels scores (e.g. 3.5)"
            )
        record["label"] = float(label)


# === Token classification (CoNLL) ===


class TaggedSentence(tuple):
    """A CoNLL sentence: the pair (words, tags), unpacked and compared as one, with
    `lines`, the file line of each word, for errors to name."""

    def __new__(cls, words: list[str], tags: list[str], lines: list[int]):
        sentence = super().__new__(cls, (words, tags))
        sentence.lines = lines
        return sentence


def read_conll(path: str, require_tags: bool = True) -> list[TaggedSentence]:
    """Reads `token<TAB>tag` lines (a single space also separates when a line has no
    tab), one blank line between sentences; `-DOCSTART-` lines separate too. A file
    whose lines all have more columns (CoNLL-2003's `token POS chunk tag`) gives the
    first as the token and the last as the tag.

    Args:
        path: the file.
        require_tags: raise on a line without a tag (False to read sentences to
            predict on: a line may then hold the token alone, and its tag is "").

    Returns:
        (words, tags) per sentence (`TaggedSentence`s, which know their lines).
    """
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    columns = None  # (fields per line, the first line with them)
    for number, line in _lines(path):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(TaggedSentence(words, tags, lines))
                words, tags, lines = [], [], []
            continue
        if "\t" in line:
            fields = line.rstrip(" \t").split("\t")
        else:
            fields = line.rstrip(" ").split(" ")
        if columns is None:
            columns = (len(fields), number)
        if columns[0] > 2 and len(fields) == columns[0]:
            fields = [fields[0], fields[-1]]  # CoNLL-2003: token ... tag
        elif columns[0] > 2 and len(fields) > 1:
            raise KblError(
                f"{path}:{number}: {len(fields)} fields, but line {columns[1]} has "
                f"{columns[0]} (token first, tag last); give every line the same "
                "columns"
            )
        if len(fields) == 1 and not require_tags:
            fields.append("")
        if len(fields) != 2:
            hint = (
                "is the tag missing?"
                if len(fields) == 1
                else "remove the extra columns (or a stray separator inside the token)"
            )
            found = f"{len(fields)} field{'s' if len(fields) > 1 else ''}"
            raise KblError(
                f"{path}:{number}: {found} where 2 are expected (token<TAB>tag); {hint}"
            )
        if not fields[0] or (require_tags and not fields[1].strip()):
            empty = "token" if not fields[0] else "tag"
            raise KblError(
                f"{path}:{number}: empty {empty}; each line is token<TAB>tag"
            )
        words.append(fields[0])
        tags.append(fields[1].strip())
        lines.append(number)
    if words:
        sentences.append(TaggedSentence(words, tags, lines))
    if not sentences:
        raise KblError(f"{path}: holds no sentences")
    return sentences


def check_scheme(sentences: Sequence[TaggedSentence], scheme: str, path: str) -> None:
    """Raises KblError when `path`'s tags are BIO (B-/I- and no E-/S- at all) and
    the model's `scheme` is BIOES: every tag is one the model knows, so the file
    would be read and scored, but its entities would not be the ones it marks. (BIO
    models refuse E-/S- tags as unknown labels.)"""
    if scheme != "BIOES":
        return
    tags = [t for _, sentence_tags in sentences for t in sentence_tags]
    if any(t[:2] in ("B-", "I-") for t in tags) and detect_scheme([tags]) == "BIO":
        raise KblError(
            f"{path}: the tags are BIO (B-/I-, no E- or S-), but the model was "
            "trained on BIOES; convert the file to BIOES (an entity's last token E-, "
            "a one-token entity S-)"
        )


def detect_scheme(
    tag_lists: Sequence[Sequence[str]],
    path: str = "",
    lines: Sequence[Sequence[int]] | None = None,
) -> str:
    """ "BIOES" if any tag starts with E- or S-, else "BIO".

    Args:
        tag_lists: each sentence's tags.
        path, lines: the file they were read from and each tag's line in it
            (`TaggedSentence.lines`), for the error to name.

    Raises:
        KblError: for a tag that is neither `O` nor `B-`, `I-`, `E-`, `S-` + a type.
    """
    prefixes: set[str] = set()
    for s, tags in enumerate(tag_lists):
        for k, tag in enumerate(tags):
            if tag == "O":
                continue
            prefix, sep, kind = tag.partition("-")
            if not sep or not kind or prefix not in ("B", "I", "E", "S"):
                where = f"{path}:{lines[s][k]}: " if path and lines else ""
                raise KblError(
                    f"{where}tag {tag!r} is neither O nor B-/I-/E-/S- plus a type; "
                    "convert the tags to BIO or BIOES"
                )
            prefixes.add(prefix)
    return "BIOES" if prefixes & {"E", "S"} else "BIO"


# === Extractive QA (SQuAD) ===


@dataclasses.dataclass
class QAExample:
    """One question on one context (SQuAD v1.1 / v2.0)."""

    id: str
    question: str
    context: str
    # (text, character offset in `context`); the first answer is the training target.
    answers: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    is_impossible: bool = False  # SQuAD v2: no answer in the context


@dataclasses.dataclass
class QAStats:
    """Counts kept while reading a SQuAD file."""

    questions: int = 0
    impossible: int = 0
    answers: int = 0
    fixed_offsets: int = 0  # answer_start off by 1-2 characters, corrected


def _locate_answer(context: str, text: str, start: int) -> int | None:
    # Some SQuAD-style files count offsets after stripping a character or two (a BOM,
    # a leading space); the text a few characters away is the same answer.
    for shift in (0, -1, 1, -2, 2):
        s = start + shift
        if s >= 0 and context[s : s + len(text)] == text:
            return s
    return None


def read_squad(
    path: str, stats: QAStats | None = None, require_answers: bool = True
) -> list[QAExample]:
    """Reads SQuAD v1.1 (no `version`, no `is_impossible`) or v2.0 JSON.

    An `answer_start` that misses its text by 1-2 characters is corrected, counted in
    `stats.fixed_offsets` and reported in one warning; a larger mismatch is an error
    naming the question id.

    Args:
        path: the JSON file.
        stats: counts to update while reading (optional).
        require_answers: raise on a question that has no answer and is not marked
            `is_impossible` (False to read questions to predict on).
    """
    from keras_bert_lite.io import read_json

    stats = stats if stats is not None else QAStats()
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise KblError(
            f"{path}: expected SQuAD JSON, an object with a 'data' list of articles"
        )
    examples: list[QAExample] = []
    seen: set[str] = set()
    fixed = 0
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise KblError(f"{path}: data[{a}] has no 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                raise KblError(f"{where}: missing string 'context'")
            for qa in paragraph.get("qas") or []:
                qid = qa.get("id") if isinstance(qa, dict) else None
                if not isinstance(qid, (str, int)) or isinstance(qid, bool):
                    raise KblError(f"{where}: a question without an 'id'")
                qid = str(qid)
                where_q = f"{path}: question {qid}"
                if qid in seen:
                    raise KblError(f"{where_q}: the id repeats; ids must be unique")
                seen.add(qid)
                question = qa.get("question")
                if not isinstance(question, str):
                    raise KblError(f"{where_q}: missing string 'question'")
                impossible = bool(qa.get("is_impossible", False))
                answers: list[tuple[str, int]] = []
                for answer in [] if impossible else qa.get("answers") or []:
                    text = answer.get("text") if isinstance(answer, dict) else None
                    start = answer.get("answer_start") if text is not None else None
                    if (
                        not isinstance(text, str)
                        or not text
                        or not isinstance(start, int)
                        or isinstance(start, bool)
                    ):
                        raise KblError(
                            f"{where_q}: each answer needs a non-empty "
                            "'text' and an integer 'answer_start'"
                        )
                    found = _locate_answer(context, text, start)
                    if found is None:
                        at = context.find(text)
                        hint = (
                            f"the text occurs at character {at}"
                            if at >= 0
                            else "the text does not occur in the context"
                        )
                        raise KblError(
                            f"{where_q}: answer {text!r} is not at answer_start "
                            f"{start} (the context there reads "
                            f"{context[start : start + len(text)]!r}); {hint}; "
                            "answer_start counts characters, not bytes"
                        )
                    fixed += found != start
                    answers.append((text, found))
                if not answers and not impossible and require_answers:
                    raise KblError(
                        f"{where_q}: no answers; add one, or mark the "
                        'question "is_impossible": true (SQuAD v2.0)'
                    )
                examples.append(QAExample(qid, question, context, answers, impossible))
                stats.questions += 1
                stats.impossible += impossible
                stats.answers += len(answers)
    stats.fixed_offsets += fixed
    if fixed:
        log.warning(
            "%s: %d answer_start offset(s) were 1-2 characters off and were corrected",
            path,
            fixed,
        )
    if not examples:
        raise KblError(f"{path}: holds no questions")
    return examples


def sample_records(records: Sequence[Any], count: int | None, seed: int) -> list[Any]:
    """A seeded random sample of `count` records in file order (all when None or
    when there are no more than `count`), so that fine-tuning and the classical
    baselines train on the same subset."""
    if count is None or count >= len(records):
        return list(records)
    keep = np.random.default_rng(seed).choice(len(records), count, replace=False)
    return [records[i] for i in sorted(keep)]


# === Label lists ===


def _labels_of(example: Any) -> list[str]:
    """The string labels of one record (none for regression, unlabelled or QA)."""
    if isinstance(example, Mapping):
        label = example.get("label")
        if isinstance(label, str):
            return [label]
        return list(label) if isinstance(label, list) else []
    if isinstance(example, tuple) and len(example) == 2:
        return list(example[1])
    return []


def collect_labels(examples: Sequence[Any]) -> list[str]:
    """Sorted distinct labels of classification records or CoNLL (words, tags) pairs."""
    labels: set[str] = set()
    for example in examples:
        labels.update(_labels_of(example))
    return sorted(labels)


def write_labels(path: str, labels: Sequence[str]) -> None:
    """Writes one label per line (id = line number - 1), atomically."""
    from keras_bert_lite.io import write_text

    if len(set(labels)) != len(labels):
        raise KblError(f"{path}: labels repeat; give each label once")
    for label in labels:
        if not label or "\n" in label or "\r" in label or label != label.strip():
            raise KblError(
                f"{path}: label {label!r} cannot be stored one per line; "
                "labels must be non-empty, without line breaks or edge "
                "spaces"
            )
    write_text(path, "".join(label + "\n" for label in labels))


def read_labels(path: str) -> list[str]:
    """Reads a labels.txt written by `write_labels`."""
    labels: list[str] = []
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        if line in seen:
            raise KblError(
                f"{path}:{number}: label {line!r} repeats line "
                f"{seen[line]}; remove the duplicate"
            )
        seen[line] = number
        labels.append(line)
    if not labels:
        raise KblError(f"{path}: holds no labels")
    return labels


def first_unknown_label(
    examples: Sequence[Any], labels: Sequence[str]
) -> tuple[int, str] | None:
    """(line, label) of the first label of `examples` not in `labels`, or None.

    The line is the file's (records and `TaggedSentence`s carry theirs), else the
    record's number."""
    known = set(labels)
    for number, example in enumerate(examples, start=1):
        for k, label in enumerate(_labels_of(example)):
            if label not in known:
                if isinstance(example, Mapping):
                    return example.get("line", number), label
                lines = getattr(example, "lines", None)
                return (lines[k] if lines else number), label
    return None


def check_labels(examples: Sequence[Any], labels: Sequence[str], path: str) -> None:
    """Raises KblError naming `path` and the line of the first label not in
    `labels` (see `first_unknown_label`)."""
    found = first_unknown_label(examples, labels)
    if found is not None:
        line, label = found
        shown = ", ".join(sorted(labels)[:20]) + (" ..." if len(labels) > 20 else "")
        raise KblError(
            f"{path}:{line}: label {label!r} is not one the model knows ({shown}); "
            "fix or drop the record, or fine-tune a model whose labels include it"
        )


def _label_ids(label_index: LabelIndex | None) -> dict[str, int]:
    if label_index is None:
        return {}
    if isinstance(label_index, Mapping):
        return dict(label_index)
    return {label: i for i, label in enumerate(label_index)}


# === Tokenizer plumbing ===


def _flat(ragged) -> tuple[np.ndarray, np.ndarray]:
    # FastBertTokenizer gives [batch, (pieces)]; a tokenizer with a words axis
    # ([batch, (words), (pieces)]) is flattened to the same shape.
    while getattr(ragged, "ragged_rank", 1) > 1:
        ragged = ragged.merge_dims(1, 2)
    return ragged.flat_values.numpy(), ragged.row_splits.numpy()


def _tokenize(tokenizer, strings: Sequence[str], offsets: bool = False):
    """Batched tokenization: (row splits [S + 1], flat ids [P]) and, with `offsets`,
    flat UTF-8 byte starts and ends [P]."""
    parts: list[list[np.ndarray]] = [[], [], []] if offsets else [[]]
    lengths = []
    strings = list(strings)
    for i in range(0, len(strings), _CHUNK):
        chunk = strings[i : i + _CHUNK]
        if offsets:
            outs = tokenizer.tokenize_with_offsets(chunk)
        else:
            outs = (tokenizer(chunk),)
        for part, ragged in zip(parts, outs, strict=True):
            values, splits = _flat(ragged)
            part.append(values.astype(np.int64))
        lengths.append(np.diff(splits))
    splits = np.zeros(len(strings) + 1, np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=splits[1:])
    flat = [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]
    flat[0] = flat[0].astype(np.int32)
    return (splits, *flat)


def _bytes_to_chars(
    text: str, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 byte offsets [start, end) into `text` -> character offsets."""
    if text.isascii():
        return starts, ends
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    # A character begins at every byte that is not a continuation byte (10xxxxxx).
    boundaries = np.append(np.flatnonzero((raw & 0xC0) != 0x80), raw.size)
    return (
        np.searchsorted(boundaries, starts, "right") - 1,
        np.searchsorted(boundaries, ends, "left"),
    )


def default_doc_stride(seq_len: int, max_query_len: int) -> int:
    """Context pieces between QA window starts when none is given: BERT's 128, or
    half of what a window holds of the context after a `max_query_len`-piece
    question where that is less (at seq_len 128 a window holds 61 pieces, and a
    stride of 128 would leave no overlap: an answer across a window's edge would be
    in no window, and a piece near an edge would never be read with context)."""
    room = seq_len - max_query_len - 3
    return max(1, min(128, room // 2))


def _windows(total: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) windows over `total` pieces, as BERT's SQuAD doc spans: each
    starts `stride` after the last, and the last reaches the end, so nothing is cut."""
    spans, start = [], 0
    while True:
        length = min(total - start, size)
        spans.append((start, length))
        if start + length >= total:
            return spans
        start += min(length, stride)


def _max_context_window(
    positions: np.ndarray, spans: Sequence[tuple[int, int]]
) -> np.ndarray:
    """For each piece position, the window where it has the most context on its
    shorter side (BERT's `_check_is_max_context`; ties go to the earlier window)."""
    best = np.full(len(positions), -1, np.int64)
    best_score = np.full(len(positions), -np.inf)
    for k, (start, length) in enumerate(spans):
        inside = (positions >= start) & (positions < start + length)
        score = np.minimum(positions - start, start + length - 1 - positions)
        score = score + 0.01 * length
        better = inside & (score > best_score)
        best[better] = k
        best_score[better] = score[better]
    return best


# === Sentence (pair) classification features ===


def _kept_lengths(lengths: Sequence[int], seq_len: int) -> tuple[int, ...]:
    """The pieces of each text (one, or a pair's two) that `[CLS] A [SEP]` or
    `[CLS] A [SEP] B [SEP]` keeps in seq_len tokens."""
    if len(lengths) == 1:
        return (min(lengths[0], seq_len - 2),)
    return truncated_lengths(*lengths, seq_len - 3)


def truncated_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after dropping tokens from the end of the longer segment one at a time
    (B on a tie), as BERT's `_truncate_seq_pair`, computed without the loop."""
    if len_a + len_b <= budget:
        return len_a, len_b
    if len_a > len_b:
        if len_b <= budget - len_b:
            return budget - len_b, len_b
    elif len_a <= budget - len_a:
        return len_a, budget - len_a
    # Both get cut: the loop ends with the lengths equal or A one longer.
    return budget - budget // 2, budget // 2


def encode_classification(
    examples: Sequence[Mapping[str, Any]],
    tokenizer,
    seq_len: int,
    label_index: LabelIndex | None = None,
) -> dict[str, np.ndarray]:
    """Classification records -> `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` features.

    A single text keeps its first seq_len - 2 pieces; a pair is truncated longest-first
    (pieces drop from the end of the longer segment) to fit.

    Args:
        examples: records from `read_classification`.
        tokenizer: a `BertTokenizer`.
        seq_len: T, special tokens included.
        label_index: label -> id (or the label list, id = position); not needed for
            regression or unlabelled records.

    Returns:
        `token_ids`, `segment_ids`, `padding_mask` int32 [N, T] and, when the records
        carry labels, `labels`: int32 [N] ids, float32 [N, K] multi-hot (multi-label)
        or float32 [N] targets (regression).
    """
    n = len(examples)
    pair = bool(n) and "text_a" in examples[0]
    smallest = (3 if pair else 2) + 1  # [CLS] text [SEP] (text_b [SEP])
    if seq_len < smallest:
        raise KblError(
            f"seq_len {seq_len} leaves no room for text: it takes at least "
            f"{smallest} (the special tokens and a piece of text), and texts are cut "
            "to fit; 64 or more is usual"
        )

    def where(i: int) -> str:
        return f"record {i + 1}" + (
            f" (line {examples[i]['line']})" if "line" in examples[i] else ""
        )

    for i, ex in enumerate(examples):
        if ("text_a" in ex) != pair:
            raise KblError(f"{where(i)}: mixes single-text and text-pair records")
    a_splits, a_ids = _tokenize(
        tokenizer, [ex["text_a" if pair else "text"] for ex in examples]
    )
    if pair:
        b_splits, b_ids = _tokenize(tokenizer, [ex["text_b"] for ex in examples])
    token_ids = np.zeros((n, seq_len), np.int32)  # (N, T)
    segment_ids = np.zeros((n, seq_len), np.int32)
    padding_mask = np.zeros((n, seq_len), np.int32)
    truncated = 0
    for i in range(n):
        a = a_ids[a_splits[i] : a_splits[i + 1]]
        if pair:
            b = b_ids[b_splits[i] : b_splits[i + 1]]
            len_a, len_b = _kept_lengths((len(a), len(b)), seq_len)
            row = np.concatenate([[CLS_ID], a[:len_a], [SEP_ID], b[:len_b], [SEP_ID]])
            segment_ids[i, len_a + 2 : len(row)] = 1
            truncated += len_a + len_b < len(a) + len(b)
        else:
            (len_a,) = _kept_lengths((len(a),), seq_len)
            row = np.concatenate([[CLS_ID], a[:len_a], [SEP_ID]])
            truncated += len_a < len(a)
        token_ids[i, : len(row)] = row
        padding_mask[i, : len(row)] = 1
    if truncated:
        log.info(
            "%d of %d examples were truncated to seq_len %d", truncated, n, seq_len
        )
    features = {
        "token_ids": token_ids,
        "segment_ids": segment_ids,
        "padding_mask": padding_mask,
    }
    labelled = [("label" in ex) for ex in examples]
    if any(labelled):
        if not all(labelled):
            raise KblError(
                f"{where(labelled.index(False))}: has no label while others "
                "do; label every record or none"
            )
        features["labels"] = _encode_labels(examples, _label_ids(label_index), where)
    return features


def labels_at_threshold(
    probabilities: Sequence[float], labels: Sequence[str], threshold: float
) -> list[str]:
    """A multi-label prediction: every label whose probability is at or over the
    threshold, most probable first (ties in label order); may be empty."""
    ranked = sorted(zip(labels, probabilities, strict=True), key=lambda x: -x[1])
    return [name for name, p in ranked if p >= threshold]


def decision_threshold(
    given: float | None, tuned: float, kind: str, model: str
) -> float:
    """The threshold a multi-label prediction is made at: `given` (kbl predict
    --threshold), checked, or else the one `tuned` on dev. `kind`: the model's
    label kind (or task) and `model` its run or export, for the error."""
    if given is None:
        return float(tuned)
    if kind != "multi_label":
        what = {"single": "single-label classifier", "regression": "regression model"}
        raise KblError(
            f"{model} is a {what.get(kind, kind + ' model')}: --threshold is the "
            "decision threshold of a multi-label classifier; drop it"
        )
    if not 0.0 <= given <= 1.0:  # nan too
        raise KblError(f"--threshold {given}: give a probability from 0 to 1")
    return float(given)


def classification_cuts(
    tokenizer,
    texts: Sequence[str],
    seq_len: int,
    pairs: Sequence[str] | None = None,
) -> list[dict[str, int]]:
    """Where `encode_classification` stops reading each text that it cuts to fit
    seq_len: `{"truncated_at": C}` (and, for the second text of a pair,
    `"truncated_at_b"`), C the character after the last piece read; {} for a text
    read whole."""
    columns = [texts] if pairs is None else [texts, pairs]
    tokenized = [_tokenize(tokenizer, column, offsets=True) for column in columns]
    cuts: list[dict[str, int]] = []
    for i in range(len(texts)):
        lengths = [int(splits[i + 1] - splits[i]) for splits, *_ in tokenized]
        kept = _kept_lengths(lengths, seq_len)
        cut: dict[str, int] = {}
        keys = ("truncated_at", "truncated_at_b")[: len(columns)]
        for key, column, (splits, _, _, ends), n, k in zip(
            keys, columns, tokenized, lengths, kept, strict=True
        ):
            if k == 0 < n:  # a pair's budget can leave one text no piece at all
                cut[key] = 0
            elif k < n:
                end = ends[splits[i] + k - 1 : splits[i] + k]
                cut[key] = int(_bytes_to_chars(column[i], end, end)[1][0])
        cuts.append(cut)
    return cuts


def classification_predictions(
    texts: Sequence[str],
    probabilities: np.ndarray,
    labels: Sequence[str],
    kind: str = "single",
    threshold: float = 0.5,
    pairs: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """What `kbl predict` gives for each text of a classifier.

    Args:
        texts: the texts (the first of each pair).
        probabilities: the model's `probabilities`, [N, K] ([N] or [N, 1] for
            regression).
        labels: the label names, id = position.
        kind: "single", "multi_label" or "regression".
        threshold: multi-label: the decision threshold tuned on dev.
        pairs: the second texts of a sentence-pair classifier.

    Returns:
        `{"text", "label", "probabilities"}` per text, every label's probability,
        most probable first; multi-label `"labels"` (every label at or over the
        threshold, most probable first; may be empty) in place of `"label"`;
        regression `{"text", "value"}`. Pairs add `"text_b"` after `"text"`.
    """
    probabilities = np.asarray(probabilities)
    results = []
    for i, text in enumerate(texts):
        result: dict[str, Any] = {"text": text}
        if pairs is not None:
            result["text_b"] = pairs[i]
        if kind == "regression":
            result["value"] = float(probabilities[i].reshape(-1)[0])
            results.append(result)
            continue
        ranked = sorted(
            zip(labels, probabilities[i].tolist(), strict=True), key=lambda x: -x[1]
        )
        if kind == "multi_label":
            result["labels"] = labels_at_threshold(probabilities[i], labels, threshold)
        else:
            result["label"] = ranked[0][0]
        result["probabilities"] = dict(ranked)
        results.append(result)
    return results


def _encode_labels(examples, index: dict[str, int], where) -> np.ndarray:
    kind = _label_kind(examples[0]["label"])
    if kind == "regression":
        return np.array([float(ex["label"]) for ex in examples], np.float32)
    out = (
        np.zeros(len(examples), np.int32)
        if kind == "single-label"
        else np.zeros((len(examples), len(index)), np.float32)
    )
    for i, ex in enumerate(examples):
        label = ex["label"]
        if _label_kind(label) != kind:
            raise KblError(
                f"{where(i)}: a {_label_kind(label)} label among {kind} "
                "labels; use one kind per data set"
            )
        for name in [label] if kind == "single-label" else label:
            if name not in index:
                raise KblError(
                    f"{where(i)}: label {name!r} is not in the label list "
                    f"({len(index)} labels); check the data against "
                    "labels.txt"
                )
            if kind == "single-label":
                out[i] = index[name]
            else:
                out[i, index[name]] = 1.0
    return out


# === Token classification features ===


class _Features:
    """What tagging and QA features share: one row per window, the model inputs."""

    token_ids: np.ndarray
    segment_ids: np.ndarray
    padding_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.token_ids)

    def inputs(self) -> dict[str, np.ndarray]:
        """The model inputs by name."""
        return {
            "token_ids": self.token_ids,
            "segment_ids": self.segment_ids,
            "padding_mask": self.padding_mask,
        }


@dataclasses.dataclass
class TaggingFeatures(_Features):
    """Token classification features, one row per window.

    A sentence longer than seq_len - 2 pieces spans several overlapping windows; each
    word is predicted at its first piece in exactly one of them (the window where that
    piece has the most context), marked by `label_weights`.
    """

    token_ids: np.ndarray  # int32 (N, T): [CLS] pieces [SEP] 0...
    segment_ids: np.ndarray  # int32 (N, T), all 0
    padding_mask: np.ndarray  # int32 (N, T)
    labels: np.ndarray  # int32 (N, T): the tag id where label_weights is 1, else 0
    label_weights: np.ndarray  # float32 (N, T): 1 on the one piece predicting a word
    word_index: np.ndarray  # int32 (N, T): word of each piece in its sentence, -1 for
    # [CLS], [SEP] and padding
    sentence_index: np.ndarray  # int32 (N,): the sentence each window comes from


def encode_tagging(
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]] | None,
    tokenizer,
    seq_len: int,
    label_index: LabelIndex | None,
    stride: int | None = None,
) -> TaggingFeatures:
    """Words (and tags) -> token classification features.

    Each word is tokenized on its own (for Chinese, each character as the file gives
    it); its first piece carries the tag and weight 1, its other pieces label 0 and
    weight 0. A word that tokenizes to nothing (a control or zero-width character)
    gets one [UNK] piece so it still gets a prediction. Sentences longer than
    seq_len - 2 pieces become overlapping windows `stride` pieces apart.

    Args:
        sentences: words per sentence.
        tags: tags per sentence, or None to predict.
        tokenizer: a `BertTokenizer`.
        seq_len: T, [CLS] and [SEP] included.
        label_index: tag -> id (or the tag list, id = position); unused without tags.
        stride: pieces between window starts; default half the window.

    Returns:
        `TaggingFeatures`, one row per window; `merge_tagging_predictions` maps the
        model's per-piece predictions back to one label per word.
    """
    size = seq_len - 2
    if size < 1:
        raise KblError(
            f"seq_len {seq_len} leaves no room for words: it takes at least 3 "
            "([CLS], a piece, [SEP]); longer sentences are windowed, 128 is usual"
        )
    stride = max(1, size // 2) if stride is None else stride
    if stride < 1:
        raise KblError(f"stride must be at least 1, got {stride}")
    if tags is not None and len(tags) != len(sentences):
        raise KblError(f"{len(sentences)} sentences but {len(tags)} tag lists")
    index = _label_ids(label_index)

    words = [w for sentence in sentences for w in sentence]
    splits, ids = _tokenize(tokenizer, words)
    counts = np.diff(splits)
    # One [UNK] for a word with no pieces: every word keeps exactly one prediction.
    fixed_counts = np.maximum(counts, 1)
    word_starts = np.zeros(len(words) + 1, np.int64)
    np.cumsum(fixed_counts, out=word_starts[1:])
    pieces = np.full(word_starts[-1], UNK_ID, np.int32)
    piece_word = np.repeat(np.arange(len(words)), counts)
    pieces[word_starts[piece_word] + np.arange(len(ids)) - splits[piece_word]] = ids

    rows: list[tuple[int, int, int, int, np.ndarray]] = []
    row_tags: list[np.ndarray] = []
    first_word = 0
    for s, sentence in enumerate(sentences):
        m = len(sentence)
        tag_ids = np.zeros(m, np.int32)
        if tags is not None:
            if len(tags[s]) != m:
                raise KblError(f"sentence {s + 1}: {m} words but {len(tags[s])} tags")
            for j, tag in enumerate(tags[s]):
                if tag not in index:
                    raise KblError(
                        f"sentence {s + 1}, word {j + 1} ({sentence[j]!r}): "
                        f"tag {tag!r} is not in the label list; check the "
                        "data against labels.txt"
                    )
                tag_ids[j] = index[tag]
        base = word_starts[first_word]
        firsts = word_starts[first_word : first_word + m] - base  # first piece per word
        total = int(word_starts[first_word + m] - base)
        spans = _windows(total, size, stride)
        owner = _max_context_window(firsts, spans)
        for k, (start, length) in enumerate(spans):
            rows.append(
                (s, first_word, int(base) + start, length, firsts[owner == k] - start)
            )
            row_tags.append(tag_ids[owner == k])
        first_word += m

    n = len(rows)
    token_ids = np.zeros((n, seq_len), np.int32)  # (N, T)
    labels = np.zeros((n, seq_len), np.int32)
    label_weights = np.zeros((n, seq_len), np.float32)
    word_index = np.full((n, seq_len), -1, np.int32)
    padding_mask = np.zeros((n, seq_len), np.int32)
    sentence_index = np.zeros(n, np.int32)
    word_of_piece = np.repeat(np.arange(len(words)), fixed_counts)
    for r, ((s, first, start, length, predicted), tag_row) in enumerate(
        zip(rows, row_tags, strict=True)
    ):
        sentence_index[r] = s
        token_ids[r, 0] = CLS_ID
        token_ids[r, 1 : length + 1] = pieces[start : start + length]
        token_ids[r, length + 1] = SEP_ID
        padding_mask[r, : length + 2] = 1
        word_index[r, 1 : length + 1] = word_of_piece[start : start + length] - first
        label_weights[r, predicted + 1] = 1.0
        labels[r, predicted + 1] = tag_row
    return TaggingFeatures(
        token_ids,
        np.zeros_like(token_ids),
        padding_mask,
        labels,
        label_weights,
        word_index,
        sentence_index,
    )


def merge_tagging_predictions(
    features: TaggingFeatures, predictions, num_words_per_sentence: Sequence[int]
) -> list[list[int]]:
    """Per-window predictions -> one label id per original word.

    Args:
        features: what `encode_tagging` returned.
        predictions: scores float (N, T, K) (argmax is taken) or label ids int (N, T).
        num_words_per_sentence: words in each sentence given to `encode_tagging`.

    Returns:
        A list of label ids per sentence, one per word.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 3:
        predictions = predictions.argmax(-1)
    if predictions.shape != features.token_ids.shape:
        raise ValueError(
            f"predictions of shape {predictions.shape} do not match the "
            f"features' {features.token_ids.shape}"
        )
    merged = [[-1] * int(m) for m in num_words_per_sentence]
    rows, cols = np.nonzero(features.label_weights > 0)
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        merged[features.sentence_index[r]][features.word_index[r, c]] = int(
            predictions[r, c]
        )
    for s, labels in enumerate(merged):
        if -1 in labels:
            raise ValueError(
                f"sentence {s}: word {labels.index(-1)} has no "
                "prediction; were the features made from these sentences?"
            )
    return merged


# The CJK characters that raw text splits into words of their own, as the tokenizer
# splits them (`keras_bert_lite.cjk`).
_CJK = CJK_CLASS
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")


def words_with_offsets(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of raw text's words, as `kbl predict` tags
    them: runs of non-space characters, each CJK character a word of its own, and
    each opening bracket or quote at a run's start, each closing one or stop (. , ;
    : ! ?) at its end, a word of its own (`keras_bert_lite.cjk.edge_punctuation`),
    as CoNLL files write them: '("Paris"),' is (, ", Paris, ", ) and ",". A word
    that holds a full stop keeps its last one ("U.S.", "a.m."); a run of nothing
    but such punctuation ("...") is one word; "#tag", "@user", "don't" are one."""
    opening, closing = cjk.edge_punctuation()
    spans = []
    for m in _WORD.finditer(text):
        start, end = m.span()
        first, last = start, end
        while first < end and text[first] in opening:
            first += 1
        while last > first and text[last - 1] in closing:
            last -= 1
        if last < end and text[last] == "." and "." in text[first:last]:
            last += 1  # an abbreviation's full stop
        if first == last:  # all edge punctuation (or one CJK character): one word
            spans.append((start, end))
            continue
        spans += [(i, i + 1) for i in range(start, first)]
        spans.append((first, last))
        spans += [(i, i + 1) for i in range(last, end)]
    return spans


def join_words(words: Sequence[str]) -> str:
    """Words as raw text: joined by spaces, except between two CJK characters (as
    Chinese is written), so that `words_with_offsets` gives the same words back
    (those of a CoNLL file; a word such as "Mary's." comes back as two)."""
    return join_words_with_offsets(words)[0]


def join_words_with_offsets(
    words: Sequence[str],
) -> tuple[str, list[tuple[int, int]]]:
    """(`join_words(words)`, each word's (start, end) character span in it)."""
    text, spans = "", []
    for word in words:
        if text and not (
            _CJK_CHAR.fullmatch(text[-1]) and _CJK_CHAR.fullmatch(word[:1])
        ):
            text += " "
        spans.append((len(text), len(text) + len(word)))
        text += word
    return text, spans


def word_scores(
    features: TaggingFeatures, scores, num_words_per_sentence: Sequence[int]
) -> list[np.ndarray]:
    """Per-window token scores (N, T, K) -> one score row per original word, taken at
    the piece that predicts the word: a list of float arrays (words, K)."""
    scores = np.asarray(scores)
    out = [
        np.full((int(m), scores.shape[-1]), np.nan, np.float32)
        for m in num_words_per_sentence
    ]
    rows, cols = np.nonzero(features.label_weights > 0)
    out_rows = features.sentence_index[rows]
    words = features.word_index[rows, cols]
    for r, c, s, w in zip(
        rows.tolist(), cols.tolist(), out_rows.tolist(), words.tolist(), strict=True
    ):
        out[s][w] = scores[r, c]
    return out


def allowed_transitions(
    labels: Sequence[str], scheme: str = "BIO"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, transition, end) masks of the tag sequences the scheme allows.

    BIO: `I-X` only after `B-X` or `I-X`. BIOES: after `B-X` or `I-X` only `I-X` or
    `E-X`; `I-X` / `E-X` only after `B-X` or `I-X`; a sentence cannot end inside an
    entity.
    """

    def split(tag):
        return ("O", None) if tag == "O" else (tag[0], tag[2:])

    parts = [split(t) for t in labels]
    k = len(labels)
    start, end = np.ones(k, bool), np.ones(k, bool)
    trans = np.ones((k, k), bool)
    for j, (pj, tj) in enumerate(parts):
        if pj in ("I", "E"):
            start[j] = False
        if scheme == "BIOES" and pj in ("B", "I"):
            end[j] = False
        for i, (pi, ti) in enumerate(parts):
            inside = pi in ("B", "I") and ti == tj
            if pj in ("I", "E") and not inside:
                trans[i, j] = False
            if (
                scheme == "BIOES"
                and pi in ("B", "I")
                and not (pj in ("I", "E") and ti == tj)
            ):
                trans[i, j] = False
    return start, trans, end


def viterbi_decode(
    log_probs: np.ndarray,
    start: np.ndarray,
    trans: np.ndarray,
    end: np.ndarray,
    transition_scores: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[int]:
    """The best label sequence (ids) under the allowed-transition masks.

    Args:
        log_probs: float (words, K) per-word scores (log-probabilities, or a CRF's
            emissions).
        start, trans, end: masks from `allowed_transitions`.
        transition_scores: a CRF's learned (start (K,), transitions (K, K), end (K,))
            scores, added to the path score; None for none.
    """
    n, k = log_probs.shape
    if n == 0:
        return []
    forbidden = -1e9
    learned = transition_scores or (0.0, 0.0, 0.0)
    score = log_probs[0] + np.where(start, learned[0], forbidden)
    back = np.zeros((n, k), np.int64)
    penalty = np.where(trans, learned[1], forbidden)
    for t in range(1, n):
        candidates = score[:, None] + penalty  # (previous, current)
        back[t] = candidates.argmax(0)
        score = candidates.max(0) + log_probs[t]
    score = score + np.where(end, learned[2], forbidden)
    best = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        best.append(int(back[t, best[-1]]))
    return best[::-1]


# === Extractive QA features ===


@dataclasses.dataclass
class QAFeatures(_Features):
    """`[CLS] question [SEP] context window [SEP]` features, one row per window."""

    token_ids: np.ndarray  # int32 (N, T)
    segment_ids: np.ndarray  # int32 (N, T): 0 for [CLS] question [SEP], 1 after
    padding_mask: np.ndarray  # int32 (N, T)
    start_positions: np.ndarray  # int32 (N,): answer's first piece; 0 ([CLS]) when the
    end_positions: np.ndarray  # int32 (N,)   answer is not wholly in this window
    example_index: np.ndarray  # int32 (N,): the example each window comes from
    token_to_char: np.ndarray  # int32 (N, T, 2): [start, end) character offsets in the
    # context for context pieces, -1 elsewhere
    max_context: np.ndarray  # bool (N, T): this window is the one where the context
    # piece has the most context (spans are decoded only from such starts)


def encode_squad(
    examples: Sequence[QAExample],
    tokenizer,
    seq_len: int = 384,
    doc_stride: int = 128,
    max_query_len: int = 64,
) -> QAFeatures:
    """QA examples -> windowed span-extraction features.

    The question keeps its first `max_query_len` pieces; the context is cut into
    windows `doc_stride` pieces apart. The target is the first answer, given as its
    first and last piece when it lies wholly inside the window, else both 0 ([CLS]);
    unanswerable questions point at [CLS] in every window.

    Args:
        examples: from `read_squad`.
        tokenizer: a `BertTokenizer` (its byte offsets map pieces to characters).
        seq_len: T.
        doc_stride: context pieces between window starts.
        max_query_len: question pieces kept.
    """
    if seq_len - max_query_len - 3 < 1:
        raise KblError(
            f"seq_len {seq_len} leaves no room for the context after a "
            f"{max_query_len}-piece question; raise seq_len or lower "
            "max_query_len"
        )
    if doc_stride < 1:
        raise KblError(f"doc_stride must be at least 1, got {doc_stride}")
    q_splits, q_ids = _tokenize(tokenizer, [ex.question for ex in examples])
    # Many questions share a context: tokenize each distinct context once.
    context_row: dict[str, int] = {}
    for ex in examples:
        context_row.setdefault(ex.context, len(context_row))
    contexts = list(context_row)
    c_splits, c_ids, c_starts, c_ends = _tokenize(tokenizer, contexts, offsets=True)
    char_offsets = []
    for i, context in enumerate(contexts):
        lo, hi = c_splits[i], c_splits[i + 1]
        char_offsets.append(_bytes_to_chars(context, c_starts[lo:hi], c_ends[lo:hi]))

    rows = []
    unmapped = 0
    for e, ex in enumerate(examples):
        question = q_ids[q_splits[e] : q_splits[e + 1]][:max_query_len]
        c = context_row[ex.context]
        doc = c_ids[c_splits[c] : c_splits[c + 1]]
        d_start, d_end = char_offsets[c]
        answer = None
        if ex.answers and not ex.is_impossible:
            text, start = ex.answers[0]
            # First piece ending after the answer starts, last piece starting before
            # it ends: an answer cut inside a word widens to whole pieces.
            first = int(np.searchsorted(d_end, start, "right"))
            last = int(np.searchsorted(d_start, start + len(text), "left")) - 1
            if first <= last:
                answer = (first, last)
            else:
                unmapped += 1
        size = seq_len - len(question) - 3
        spans = _windows(len(doc), size, doc_stride)
        owner = _max_context_window(np.arange(len(doc)), spans)
        offset = len(question) + 2  # context starts after [CLS] question [SEP]
        for k, (start, length) in enumerate(spans):
            positions = (0, 0)
            if answer and start <= answer[0] and answer[1] < start + length:
                positions = (answer[0] - start + offset, answer[1] - start + offset)
            rows.append(
                (e, question, doc, d_start, d_end, start, length, owner == k, positions)
            )
    if unmapped:
        log.warning(
            "%d answer(s) cover no token (whitespace or dropped characters "
            "only) and are trained as unanswerable",
            unmapped,
        )

    n = len(rows)
    token_ids = np.zeros((n, seq_len), np.int32)  # (N, T)
    segment_ids = np.zeros((n, seq_len), np.int32)
    padding_mask = np.zeros((n, seq_len), np.int32)
    token_to_char = np.full((n, seq_len, 2), -1, np.int32)  # (N, T, 2)
    max_context = np.zeros((n, seq_len), bool)
    start_positions = np.zeros(n, np.int32)
    end_positions = np.zeros(n, np.int32)
    example_index = np.zeros(n, np.int32)
    for r, (
        e,
        question,
        doc,
        d_start,
        d_end,
        start,
        length,
        owned,
        positions,
    ) in enumerate(rows):
        offset = len(question) + 2
        end = offset + length
        token_ids[r, : end + 1] = np.concatenate(
            [[CLS_ID], question, [SEP_ID], doc[start : start + length], [SEP_ID]]
        )
        segment_ids[r, offset : end + 1] = 1
        padding_mask[r, : end + 1] = 1
        token_to_char[r, offset:end, 0] = d_start[start : start + length]
        token_to_char[r, offset:end, 1] = d_end[start : start + length]
        max_context[r, offset:end] = owned[start : start + length]
        start_positions[r], end_positions[r] = positions
        example_index[r] = e
    return QAFeatures(
        token_ids,
        segment_ids,
        padding_mask,
        start_positions,
        end_positions,
        example_index,
        token_to_char,
        max_context,
    )


def decode_squad(
    features: QAFeatures,
    start_logits,
    end_logits,
    examples: Sequence[QAExample],
    n_best: int = 20,
    max_answer_len: int = 30,
    null_threshold: float = 0.0,
) -> dict[str, dict[str, Any]]:
    """Start/end logits -> one answer per question, cut from the original context.

    For each window the `n_best` starts and ends (context pieces only, starts only
    where the window has the piece's max context) are paired; the best pair
    (start + end logit) over all windows wins unless the null score (start[0] +
    end[0], the lowest over the question's windows) beats it by more than
    `null_threshold` (SQuAD v2). Pass `null_threshold=math.inf` to always answer
    (SQuAD v1.1).

    Args:
        features: from `encode_squad` on `examples`.
        start_logits, end_logits: float (N, T).
        examples: the examples the features were made from.
        n_best: candidates per side and window.
        max_answer_len: longest answer, in pieces.
        null_threshold: margin the null score must exceed the best span by.

    Returns:
        {question id: {"text", "start", "end", "score"}} with character offsets
        [start, end) into the context; "" with start = end = -1 for no answer.
    """
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    if not start_logits.shape == end_logits.shape == features.token_ids.shape:
        raise ValueError(
            f"logits of shapes {start_logits.shape}, {end_logits.shape} "
            f"do not match the features' {features.token_ids.shape}"
        )
    by_example: dict[int, list[int]] = {}
    for f, e in enumerate(features.example_index.tolist()):
        by_example.setdefault(e, []).append(f)
    results: dict[str, dict[str, Any]] = {}
    for e, ex in enumerate(examples):
        best = None  # (score, feature, start, end)
        null = math.inf
        for f in by_example.get(e, []):
            s_logits, e_logits = start_logits[f], end_logits[f]
            null = min(null, float(s_logits[0] + e_logits[0]))
            in_context = features.token_to_char[f, :, 0] >= 0
            starts = _top(s_logits, in_context & features.max_context[f], n_best)
            ends = _top(e_logits, in_context, n_best)
            if not len(starts) or not len(ends):
                continue
            scores = s_logits[starts][:, None] + e_logits[ends][None, :]
            span = ends[None, :] - starts[:, None]
            scores = np.where((span >= 0) & (span < max_answer_len), scores, -np.inf)
            i, j = np.unravel_index(np.argmax(scores), scores.shape)
            if np.isfinite(scores[i, j]) and (best is None or scores[i, j] > best[0]):
                best = (float(scores[i, j]), f, int(starts[i]), int(ends[j]))
        if best is None or null - best[0] > null_threshold:
            results[ex.id] = {
                "text": "",
                "start": -1,
                "end": -1,
                "score": null if math.isfinite(null) else 0.0,
            }
        else:
            score, f, s, t = best
            char_start = int(features.token_to_char[f, s, 0])
            char_end = int(features.token_to_char[f, t, 1])
            results[ex.id] = {
                "text": ex.context[char_start:char_end],
                "start": char_start,
                "end": char_end,
                "score": score,
            }
    return results


def _top(logits: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` highest logits among the allowed ones."""
    candidates = np.flatnonzero(allowed)
    order = np.argsort(-logits[candidates], kind="stable")[:k]
    return candidates[order]
