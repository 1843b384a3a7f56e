"""Evaluation metrics for fine-tuned BERT models, in pure Python and NumPy.

No scikit-learn, seqeval or TensorFlow at run time; the tests cross-check the numbers
against scikit-learn and seqeval. Every score is a Python float in [0, 1], except the
SQuAD scores, which are percentages like the official script's. Wherever a ratio is
0/0 it counts as 0 (scikit-learn's `zero_division=0`).

Semantics:

* `classification_metrics`: single-label classification. Accuracy over all items;
  per-label precision / recall / F1 / support; macro-F1 is the unweighted mean of
  per-label F1 over the labels that occur in `y_true` or `y_pred` (scikit-learn's
  `f1_score(average="macro")` with `labels=None`). A label named in `labels` that
  never occurs in either is reported with zeros but left out of the mean.
* `multilabel_metrics`: each example carries a set of labels. Micro scores pool the
  (example, label) decisions; macro-F1 is the mean over labels that occur in
  `y_true` or `y_pred`, as above; exact match is the share of examples whose
  predicted set equals the true set.
* `regression_metrics`: mean squared and absolute error, and Pearson's and
  Spearman's correlation of predictions with the gold values (GLUE's STS-B scores;
  Spearman's with tied values given their average rank, as `scipy.stats.spearmanr`
  does). A correlation with a constant side is 0/0 and counts as 0.
* `best_threshold`: the one probability threshold (`p >= t` is a positive) that
  maximises micro-F1 over a grid; ties go to the earliest candidate.
* `extract_entities` / `entity_metrics`: spans are (type, start, end_exclusive).
  "BIO" follows CoNLL-2000 `conlleval` (= seqeval's default mode): an `I-X` after
  `O`, or after a tag of another type, starts a new entity. "BIOES" is strict
  (= seqeval `mode="strict", scheme=IOBES`): only `B-X I-X* E-X` and `S-X` are
  entities; ill-formed pieces are dropped. Entity scores are micro-averaged over
  exact (type, start, end) matches, so a partially overlapping prediction is both a
  false positive and a false negative.
* `squad_metrics`: exact match and F1 as in the official SQuAD v1.1 / v2.0 script
  (max over gold answers; an unanswerable question has no gold answers and only a
  prediction that normalises to "" is right). Chinese text is compared character by
  character as the CMRC 2018 evaluation segments it (runs of Latin letters / digits
  stay one token), with punctuation and whitespace removed.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from keras_bert_lite.cjk import is_cjk

# Default threshold grid: 0.05, 0.10, ..., 0.95 (rounded so that 0.15 is 0.15, not
# 0.15000000000000002, which would make `p >= t` miss a probability of exactly 0.15).
DEFAULT_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))

SCHEMES = ("BIO", "BIOES")


# ---------------------------------------------------------------------------------
# Counting helpers
# ---------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0


def _prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall, F1 and support from counts (0/0 counts as 0)."""
    # 2tp / (2tp + fp + fn) equals 2PR / (P + R) wherever both are defined, and is 0
    # (not NaN) when precision is 0/0 but recall is not.
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "support": int(tp + fn),
    }


def _per_label(counts: Mapping[str, list[int]], labels: Iterable[str]) -> dict:
    return {label: _prf(*counts.get(label, (0, 0, 0))) for label in labels}


def _macro_f1(per_label: Mapping[str, dict], counts: Mapping[str, list[int]]) -> float:
    # Labels that neither occur nor are predicted say nothing about the model; counting
    # them as F1 = 0 would punish a label set for being larger than the data.
    seen = [label for label in per_label if sum(counts.get(label, (0, 0, 0))) > 0]
    return _ratio(sum(per_label[label]["f1"] for label in seen), len(seen))


def _check_lengths(y_true: Sequence, y_pred: Sequence, what: str = "items") -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true has {len(y_true)} {what} but y_pred has {len(y_pred)}"
        )


# ---------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict:
    """Accuracy, macro-F1 and per-label scores of single-label predictions.

    Args:
        y_true: the gold label of each item.
        y_pred: the predicted label of each item (same length).
        labels: the labels to report, in order; None: every label that occurs in
            `y_true` or `y_pred`, sorted. Macro-F1 averages over the reported labels
            that occur in `y_true` or `y_pred`. Accuracy always counts every item.

    Returns:
        {"accuracy", "macro_f1", "count", "per_label": {label: {"precision",
        "recall", "f1", "support"}}}.
    """
    _check_lengths(y_true, y_pred)
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    correct = 0
    for gold, guess in zip(y_true, y_pred, strict=True):
        if gold == guess:
            correct += 1
            counts[gold][0] += 1
        else:
            counts[guess][1] += 1  # a false positive for the predicted label
            counts[gold][2] += 1  # and a false negative for the true one
    if labels is None:
        labels = sorted(counts)
    per_label = _per_label(counts, labels)
    return {
        "accuracy": _ratio(correct, len(y_true)),
        "macro_f1": _macro_f1(per_label, counts),
        "per_label": per_label,
        "count": len(y_true),
    }


def multilabel_metrics(
    y_true: Sequence[Sequence[str]],
    y_pred: Sequence[Sequence[str]],
    labels: Sequence[str],
) -> dict:
    """Micro / macro scores and exact match of multi-label predictions.

    Args:
        y_true: for each example, its gold labels (order and repeats do not matter).
        y_pred: for each example, its predicted labels.
        labels: every label of the task; a label outside it is a ValueError (it is
            nearly always a typo or a mismatched label file).

    Returns:
        {"micro_f1", "macro_f1", "micro_precision", "micro_recall", "exact_match",
        "per_label": {label: {"precision", "recall", "f1", "support"}}}.
    """
    _check_lengths(y_true, y_pred, "examples")
    known = set(labels)
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    exact = 0
    for index, (gold, guess) in enumerate(zip(y_true, y_pred, strict=True)):
        gold, guess = set(gold), set(guess)
        unknown = (gold | guess) - known
        if unknown:
            raise ValueError(
                f"example {index} has labels not in `labels`: {sorted(unknown)}"
            )
        exact += gold == guess
        for label in gold & guess:
            counts[label][0] += 1
        for label in guess - gold:
            counts[label][1] += 1
        for label in gold - guess:
            counts[label][2] += 1
    tp, fp, fn = (sum(c[k] for c in counts.values()) for k in range(3))
    micro = _prf(tp, fp, fn)
    per_label = _per_label(counts, labels)
    return {
        "micro_f1": micro["f1"],
        "macro_f1": _macro_f1(per_label, counts),
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "exact_match": _ratio(exact, len(y_true)),
        "per_label": per_label,
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return _ratio(float(np.dot(x, y)), float(np.sqrt(np.dot(x, x) * np.dot(y, y))))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # Start of each run of equal values, and the run each sorted position is in.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (
        starts + ends + 1
    ) / 2.0  # positions start..end-1 are ranks start+1..end
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict:
    """Errors and correlations of predicted values.

    Returns:
        {"mse", "mae", "pearson", "spearman", "count"}.
    """
    _check_lengths(y_true, y_pred)
    truth = np.asarray(y_true, np.float64).reshape(-1)
    guess = np.asarray(y_pred, np.float64).reshape(-1)
    error = guess - truth
    return {
        "mse": float(np.mean(error**2)) if len(error) else 0.0,
        "mae": float(np.mean(np.abs(error))) if len(error) else 0.0,
        "pearson": _pearson(truth, guess) if len(error) else 0.0,
        "spearman": (
            _pearson(_average_ranks(truth), _average_ranks(guess))
            if len(error)
            else 0.0
        ),
        "count": len(error),
    }


def best_threshold(
    probabilities: np.ndarray,
    y_true_multi_hot: np.ndarray,
    candidates: Sequence[float] | None = None,
) -> float:
    """The single decision threshold that maximises micro-F1 (tune it on dev data).

    Args:
        probabilities: (n, L) per-label probabilities; `p >= threshold` is positive.
        y_true_multi_hot: (n, L) gold labels, 1 / True where the label applies.
        candidates: thresholds to try, in order of preference (ties go to the
            earliest); None: 0.05, 0.10, ..., 0.95.

    Returns:
        The best candidate, as a float.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    gold = np.asarray(y_true_multi_hot).astype(bool)
    if probabilities.ndim != 2 or probabilities.shape != gold.shape:
        raise ValueError(
            f"probabilities {probabilities.shape} and y_true_multi_hot "
            f"{gold.shape} must be the same (n, L) shape"
        )
    candidates = DEFAULT_THRESHOLDS if candidates is None else tuple(candidates)
    if not candidates:
        raise ValueError("candidates is empty")
    best, best_f1 = float(candidates[0]), -1.0
    for threshold in candidates:
        predicted = probabilities >= threshold
        tp = int(np.sum(predicted & gold))
        fp = int(np.sum(predicted & ~gold))
        fn = int(np.sum(~predicted & gold))
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        if f1 > best_f1:  # strict: a tie keeps the earlier candidate
            best, best_f1 = float(threshold), f1
    return best


# ---------------------------------------------------------------------------------
# Entities (sequence labelling)
# ---------------------------------------------------------------------------------


def _split_tags(tags: Sequence[str], scheme: str) -> list[tuple[str, str]]:
    """(prefix, type) of each tag; ("O", "") for O. Type: all after the first "-"."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    prefixes = ("B", "I") if scheme == "BIO" else ("B", "I", "E", "S")
    split = []
    for position, tag in enumerate(tags):
        if tag == "O":
            split.append(("O", ""))
            continue
        prefix, dash, kind = tag.partition("-")
        if prefix not in prefixes or not dash or not kind:
            expected = ", ".join(f"{p}-TYPE" for p in prefixes)
            raise ValueError(
                f"tag {tag!r} at position {position} is not valid in the "
                f"{scheme} scheme (expected O, {expected})"
            )
        split.append((prefix, kind))
    return split


def extract_entities(
    tags: Sequence[str], scheme: str = "BIO"
) -> list[tuple[str, int, int]]:
    """The entities a tag sequence marks.

    Args:
        tags: one tag per token: "O", or PREFIX-TYPE (TYPE may contain "-" and may be
            lower case, e.g. "B-geo-loc").
        scheme: "BIO" (conlleval: `I-X` after `O` or after another type starts an
            entity) or "BIOES" (strict: only `B-X I-X* E-X` and `S-X` are entities).

    Returns:
        [(type, start, end_exclusive)] in order of start.

    Raises:
        ValueError: a tag that is neither "O" nor PREFIX-TYPE with a prefix of the
            scheme; the message names the tag and its position.
    """
    split = _split_tags(tags, scheme)
    entities = []
    if scheme == "BIO":
        start, kind = None, ""
        for position, (prefix, tag_kind) in enumerate(split):
            continues = prefix == "I" and start is not None and tag_kind == kind
            if continues:
                continue
            if start is not None:
                entities.append((kind, start, position))
                start = None
            if prefix != "O":  # B-X, or an I-X that cannot continue: a new entity
                start, kind = position, tag_kind
        if start is not None:
            entities.append((kind, start, len(split)))
        return entities

    position = 0
    while position < len(split):
        prefix, kind = split[position]
        if prefix == "S":
            entities.append((kind, position, position + 1))
        elif prefix == "B":
            end = position + 1
            while end < len(split) and split[end] == ("I", kind):
                end += 1
            if end < len(split) and split[end] == ("E", kind):
                entities.append((kind, position, end + 1))
                position = end
            else:
                # Ill-formed: drop it, and look at the tag that broke it afresh (it
                # may begin the next entity).
                position = end
                continue
        # I-X and E-X outside a B-X ... E-X are ill-formed and skipped.
        position += 1
    return entities


def entity_metrics(
    true_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
    scheme: str = "BIO",
) -> dict:
    """Micro precision / recall / F1 over exactly matching entities, and per type.

    Args:
        true_tags: gold tags, one sequence per sentence.
        pred_tags: predicted tags, the same lengths sentence by sentence.
        scheme: "BIO" or "BIOES", see `extract_entities`.

    Returns:
        {"precision", "recall", "f1", "support" (gold entities), "predicted"
        (predicted entities), "count" (sentences), "per_type": {type: {"precision",
        "recall", "f1", "support"}}} where types are those of gold or predicted
        entities.
        An entity counts only if type, start and end all match: a partial overlap
        is a false positive and a false negative.
    """
    _check_lengths(true_tags, pred_tags, "sentences")
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    for index, (gold_tags, guess_tags) in enumerate(
        zip(true_tags, pred_tags, strict=True)
    ):
        if len(gold_tags) != len(guess_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} true tags but "
                f"{len(guess_tags)} predicted tags"
            )
        try:
            gold = set(extract_entities(gold_tags, scheme))
            guess = set(extract_entities(guess_tags, scheme))
        except ValueError as error:
            raise ValueError(f"sentence {index}: {error}") from None
        for kind, _, _ in gold & guess:
            counts[kind][0] += 1
        for kind, _, _ in guess - gold:
            counts[kind][1] += 1
        for kind, _, _ in gold - guess:
            counts[kind][2] += 1
    tp, fp, fn = (sum(c[k] for c in counts.values()) for k in range(3))
    micro = _prf(tp, fp, fn)
    return {
        "precision": micro["precision"],
        "recall": micro["recall"],
        "f1": micro["f1"],
        "support": micro["support"],
        "predicted": tp + fp,
        "count": len(true_tags),
        "per_type": _per_label(counts, sorted(counts)),
    }


# ---------------------------------------------------------------------------------
# Question answering (SQuAD, CMRC 2018)
# ---------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official SQuAD normalisation: lower case, drop punctuation, drop the
    articles a / an / the, collapse whitespace.

    Args:
        s: an answer text.

    Returns:
        The normalised text.
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _ASCII_PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _is_punctuation(ch: str) -> bool:
    # string.punctuation also holds ASCII symbols ($ + < = > ^ ` | ~) that the
    # official SQuAD script strips; Unicode "P*" covers ，。！？、“”《》（）：；…
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def _chinese_tokens(s: str) -> list[str]:
    """CMRC 2018 segmentation: every CJK character is a token, a run of other
    characters (Latin letters, digits) is one token; punctuation and whitespace go."""
    tokens, run = [], []
    for ch in s.lower():
        if _is_punctuation(ch):
            continue  # dropped, not a boundary: "U.S." -> "us", as in SQuAD
        if is_cjk(ch) or ch.isspace():
            if run:
                tokens.append("".join(run))
                run = []
            if not ch.isspace():
                tokens.append(ch)
        else:
            run.append(ch)
    if run:
        tokens.append("".join(run))
    return tokens


def _tokens(s: str, chinese: bool) -> list[str]:
    return _chinese_tokens(s) if chinese else normalize_answer(s).split()


def _f1(gold: list[str], guess: list[str]) -> float:
    if not gold or not guess:
        # The v2.0 rule: a no-answer is right only against a no-answer.
        return float(gold == guess)
    same = sum((collections.Counter(gold) & collections.Counter(guess)).values())
    return _ratio(2 * same, len(gold) + len(guess))  # = 2PR / (P + R)


def squad_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, list[str]],
    chinese: bool | None = None,
) -> dict:
    """Exact match and token F1 (percent), as the official SQuAD v2.0 script.

    Args:
        predictions: question id -> predicted answer text ("" for no answer). A
            question without a prediction counts as answered "".
        references: question id -> gold answer texts; [] for an unanswerable
            question (then only a prediction that normalises to "" is right).
        chinese: True: compare character by character as CMRC 2018 does (after
            removing whitespace and ASCII / CJK punctuation; a run of Latin letters
            or digits is one token). False: the SQuAD normalisation and whitespace
            tokens. None: per question, Chinese if its gold answers or prediction
            contain a CJK ideograph.

    Returns:
        {"exact", "f1", "total"} over every reference, plus "HasAns_exact",
        "HasAns_f1", "HasAns_total" and "NoAns_..." for the answerable and
        unanswerable questions where there are any.
    """
    scores: dict[str, list[tuple[float, float]]] = {"HasAns": [], "NoAns": []}
    for qid, answers in references.items():
        if isinstance(answers, str):
            raise ValueError(
                f"references[{qid!r}] must be a list of answers, not a string"
            )
        prediction = predictions.get(qid, "")
        use_chinese = chinese
        if use_chinese is None:
            use_chinese = any(
                is_cjk(ch) for text in (*answers, prediction) for ch in text
            )
        guess = _tokens(prediction, use_chinese)
        # As in v2.0: gold answers that normalise to nothing are dropped, and a
        # question left without any is unanswerable.
        golds = [t for t in (_tokens(a, use_chinese) for a in answers) if t]
        kind = "HasAns" if golds else "NoAns"
        golds = golds or [[]]
        exact = max(float(gold == guess) for gold in golds)
        f1 = max(_f1(gold, guess) for gold in golds)
        scores[kind].append((exact, f1))

    def summary(rows: list[tuple[float, float]], prefix: str = "") -> dict:
        return {
            f"{prefix}exact": 100.0 * _ratio(sum(r[0] for r in rows), len(rows)),
            f"{prefix}f1": 100.0 * _ratio(sum(r[1] for r in rows), len(rows)),
            f"{prefix}total": len(rows),
        }

    result = summary(scores["HasAns"] + scores["NoAns"])
    for kind, rows in scores.items():
        if rows:
            result.update(summary(rows, f"{kind}_"))
    return result
