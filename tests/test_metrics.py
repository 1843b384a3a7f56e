"""Metrics: hand-computed small cases, then random cross-checks against scikit-learn
and seqeval (skipped when they are not installed)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from keras_bert_lite.training.metrics import (
    best_threshold,
    classification_metrics,
    entity_metrics,
    extract_entities,
    multilabel_metrics,
    normalize_answer,
    regression_metrics,
    squad_metrics,
)

# --- classification ------------------------------------------------------------------


def test_macro_f1_of_three_classes_matches_hand_computation():
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    result = classification_metrics(y_true, y_pred)
    # a: tp 2, fp 0, fn 1 -> P 1, R 2/3, F1 0.8
    # b: tp 1, fp 1, fn 1 -> P 1/2, R 1/2, F1 1/2
    # c: tp 1, fp 1, fn 0 -> P 1/2, R 1, F1 2/3
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert result["count"] == 6
    assert result["per_label"]["a"] == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    )
    assert result["per_label"]["c"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )


def test_macro_f1_counts_labels_that_are_only_predicted():
    # z never occurs in y_true, but predicting it is a mistake that must cost F1.
    result = classification_metrics(["a", "a"], ["a", "z"])
    assert result["per_label"]["z"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_never_predicted_label_has_zero_precision_not_nan():
    result = classification_metrics(["a", "b"], ["a", "a"])
    assert result["per_label"]["b"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_listed_label_absent_from_data_is_reported_but_not_averaged():
    result = classification_metrics(["a", "a"], ["a", "z"], labels=["a", "z", "q"])
    assert list(result["per_label"]) == ["a", "z", "q"]
    assert result["per_label"]["q"]["support"] == 0
    assert result["macro_f1"] == pytest.approx(1 / 3)  # (2/3 + 0) / 2, not / 3


def test_classification_rejects_different_lengths():
    with pytest.raises(ValueError, match="3 items.*2"):
        classification_metrics(["a", "b", "c"], ["a", "b"])


# --- multi-label ---------------------------------------------------------------------


def test_multilabel_micro_macro_and_exact_match_by_hand():
    y_true = [["x", "y"], ["z"], [], ["x"]]
    y_pred = [["x"], ["z", "y"], [], ["x"]]
    result = multilabel_metrics(y_true, y_pred, labels=["x", "y", "z", "w"])
    # x: tp 2; y: fp 1 (example 1), fn 1 (example 0); z: tp 1; w: never seen.
    # micro: tp 3, fp 1, fn 1 -> P = R = F1 = 3/4
    assert result["micro_precision"] == pytest.approx(0.75)
    assert result["micro_recall"] == pytest.approx(0.75)
    assert result["micro_f1"] == pytest.approx(0.75)
    assert result["macro_f1"] == pytest.approx((1 + 0 + 1) / 3)  # w left out
    assert result["exact_match"] == pytest.approx(2 / 4)
    assert result["per_label"]["y"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }


def test_multilabel_rejects_unknown_labels():
    with pytest.raises(ValueError, match="example 1.*'typo'"):
        multilabel_metrics([["x"], ["x"]], [["x"], ["typo"]], labels=["x"])


def test_best_threshold_maximises_micro_f1_and_prefers_earlier_ties():
    probabilities = np.array([[0.9, 0.3], [0.4, 0.2], [0.6, 0.1]])
    gold = np.array([[1, 1], [0, 0], [1, 0]])
    # Positives score .9 .6 .3, negatives .4 .2 .1, `p >= t` is positive:
    # t in (.2, .3] keeps all 3 positives and only the .4 negative: F1 = 6/7, the
    # best; (.4, .6] gives 4/5; (.3, .4] gives 2/3; (.1, .2] gives 3/4.
    assert best_threshold(probabilities, gold) == 0.25  # 0.25 and 0.30 tie
    assert best_threshold(probabilities, gold, candidates=[0.5, 0.3]) == 0.3
    assert best_threshold(probabilities, gold, candidates=[0.3, 0.25]) == 0.3
    assert best_threshold(probabilities, gold, candidates=[0.5, 0.9]) == 0.5


def test_default_thresholds_are_exact_decimals():
    # Only 0.30 separates the positive at 0.3 from the negative at 0.25; a grid of
    # 0.05 * 6 = 0.30000000000000004 would put the positive below it.
    assert best_threshold(np.array([[0.3], [0.25]]), np.array([[1], [0]])) == 0.3


def test_best_threshold_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        best_threshold(np.zeros((2, 3)), np.zeros((2, 2)))


# --- entities ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["O", "I-PER", "I-PER", "O"], [("PER", 1, 3)]),  # I-X after O starts an entity
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # type change
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        (
            ["B-geo-loc", "I-geo-loc", "O", "B-person"],
            [("geo-loc", 0, 2), ("person", 3, 4)],
        ),
        (["O", "O"], []),
        ([], []),
    ],
)
def test_bio_entities_follow_conlleval(tags, expected):
    assert extract_entities(tags, "BIO") == expected


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "E-PER", "S-LOC"], [("PER", 0, 3), ("LOC", 3, 4)]),
        (["B-PER", "E-PER"], [("PER", 0, 2)]),
        (["B-PER", "I-PER", "O"], []),  # never closed
        (["B-PER", "I-PER"], []),  # runs off the end
        (["I-PER", "E-PER"], []),  # no B
        (["E-PER"], []),
        (["B-PER", "E-LOC"], []),  # type changes inside
        (["B-X", "I-Y", "E-X"], []),
        (["B-PER", "B-PER", "E-PER"], [("PER", 1, 3)]),  # the broken one is dropped
        (["B-PER", "S-LOC", "I-LOC", "E-LOC"], [("LOC", 1, 2)]),
    ],
)
def test_bioes_entities_are_strict(tags, expected):
    assert extract_entities(tags, "BIOES") == expected


def test_tags_without_a_prefix_name_the_tag_and_position():
    with pytest.raises(ValueError, match="'PER' at position 2"):
        extract_entities(["O", "B-PER", "PER"])
    with pytest.raises(ValueError, match="'E-PER' at position 0"):
        extract_entities(["E-PER"], "BIO")  # E- belongs to BIOES
    for tag in ("B-", "-PER", "BI-PER", "b-PER"):
        with pytest.raises(ValueError, match=f"'{tag}' at position 0"):
            extract_entities([tag])
    with pytest.raises(ValueError, match="scheme"):
        extract_entities(["O"], "IOB1")


def test_partial_entity_match_is_a_false_positive_and_a_false_negative():
    true_tags = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG"]]
    pred_tags = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "I-LOC"]]
    result = entity_metrics(true_tags, pred_tags)
    # Gold PER(0,2) LOC(3,4) ORG(0,2); predicted PER(0,1) LOC(3,4) LOC(0,2):
    # tp 1 (LOC 3-4), fp 2, fn 2.
    assert result["precision"] == pytest.approx(1 / 3)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(1 / 3)
    # How many: gold and predicted entities, and sentences, as other tasks count.
    assert (result["support"], result["predicted"], result["count"]) == (3, 3, 2)
    assert result["per_type"]["PER"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }
    assert result["per_type"]["LOC"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )
    assert set(result["per_type"]) == {"LOC", "ORG", "PER"}


def test_entities_do_not_run_across_sentences():
    result = entity_metrics([["O", "B-PER"], ["I-PER"]], [["O", "B-PER"], ["I-PER"]])
    assert result["per_type"]["PER"]["support"] == 2


def test_entity_metrics_name_the_sentence_whose_lengths_differ():
    with pytest.raises(ValueError, match="sentence 1"):
        entity_metrics([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 1: tag 'PER' at position 0"):
        entity_metrics([["O"], ["O"]], [["O"], ["PER"]])


# --- question answering --------------------------------------------------------------


def test_normalize_answer_is_the_official_squad_one():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


def test_squad_f1_worked_out_by_hand():
    # "the cat" -> [cat]; "a cat sat" -> [cat, sat]: 1 shared, P 1, R 1/2, F1 2/3.
    result = squad_metrics({"q": "the cat"}, {"q": ["a cat sat"]})
    assert result["exact"] == 0.0
    assert result["f1"] == pytest.approx(200 / 3)
    # Best of several golds; casing and punctuation do not matter for EM.
    result = squad_metrics({"q": "The Cat!"}, {"q": ["dog", "cat"]})
    assert (result["exact"], result["f1"]) == (100.0, 100.0)
    # Repeated tokens count once per occurrence: 2 shared of 3 and 3.
    result = squad_metrics({"q": "cat cat dog"}, {"q": ["cat dog dog"]})
    assert result["f1"] == pytest.approx(200 / 3)


def test_unanswerable_questions_and_missing_predictions():
    references = {"q1": ["a cat sat"], "q2": [], "q3": [], "q4": ["Paris"]}
    predictions = {"q1": "the cat", "q2": "", "q3": "nothing"}  # q4 missing
    result = squad_metrics(predictions, references)
    # per question (EM, F1): q1 (0, 2/3), q2 (1, 1), q3 (0, 0), q4 (0, 0)
    assert result == pytest.approx(
        {
            "exact": 25.0,
            "f1": 100 * (2 / 3 + 1) / 4,
            "total": 4,
            "HasAns_exact": 0.0,
            "HasAns_f1": 100 * (2 / 3) / 2,
            "HasAns_total": 2,
            "NoAns_exact": 50.0,
            "NoAns_f1": 50.0,
            "NoAns_total": 2,
        }
    )


def test_no_answer_keys_are_left_out_when_every_question_has_an_answer():
    result = squad_metrics({"q": "Paris"}, {"q": ["Paris"]})
    assert set(result) == {
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
    }


def test_chinese_f1_is_character_level():
    # gold 北京大学 -> 4 chars; prediction 北京的大学。 -> 5 chars (。 removed):
    # 4 shared, P 4/5, R 1, F1 8/9.
    expected = {"exact": 0.0, "f1": pytest.approx(800 / 9)}
    for chinese in (True, None):
        result = squad_metrics({"q": "北京的大学。"}, {"q": ["北京大学"]}, chinese)
        assert {k: result[k] for k in expected} == expected
    # As one whitespace token the English path shares nothing.
    assert squad_metrics({"q": "北京的大学。"}, {"q": ["北京大学"]}, False)["f1"] == 0


def test_chinese_keeps_latin_words_whole_and_ignores_punctuation():
    # gold 使 用 bert 模 型 (5 tokens), prediction bert 模 型 (3): P 1, R 3/5, F1 3/4.
    result = squad_metrics({"q": "BERT 模型"}, {"q": ["使用BERT模型"]})
    assert result["f1"] == pytest.approx(75.0)
    result = squad_metrics({"q": "红楼梦"}, {"q": ["《红 楼 梦》"]})
    assert result["exact"] == 100.0
    result = squad_metrics({"q": "。"}, {"q": []}, chinese=True)
    assert result["NoAns_exact"] == 100.0


# --- cross-checks against scikit-learn and seqeval ----------------------------------


def test_classification_agrees_with_sklearn_on_random_labels():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 25)
        y_true = [rng.choice("abcd") for _ in range(n)]
        y_pred = [rng.choice("abcde") for _ in range(n)]
        result = classification_metrics(y_true, y_pred)
        assert result["accuracy"] == pytest.approx(
            sklearn_metrics.accuracy_score(y_true, y_pred)
        )
        assert result["macro_f1"] == pytest.approx(
            sklearn_metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)
        )
        labels = sorted(result["per_label"])
        p, r, f, s = sklearn_metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0
        )
        ours = [
            [result["per_label"][label][k] for label in labels]
            for k in ("precision", "recall", "f1", "support")
        ]
        np.testing.assert_allclose(ours, [p, r, f, s])


def test_regression_errors_and_correlations_by_hand():
    # Ranks of the truth 1, 2.5, 2.5, 4; of the guesses 1, 2, 3, 4.
    result = regression_metrics([1.0, 2.0, 2.0, 5.0], [0.0, 2.0, 3.0, 5.0])
    assert result["mse"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert result["mae"] == pytest.approx(0.5)
    # Pearson: x - 2.5 = (-1.5, -0.5, -0.5, 2.5), y - 2.5 = (-2.5, -0.5, 0.5, 2.5);
    # sum xy = 3.75 + 0.25 - 0.25 + 6.25 = 10, sum x^2 = 9, sum y^2 = 13.
    assert result["pearson"] == pytest.approx(10 / np.sqrt(9 * 13))
    # Spearman: ranks - 2.5 = (-1.5, 0, 0, 1.5) and (-1.5, -0.5, 0.5, 1.5).
    assert result["spearman"] == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert result["count"] == 4
    # A constant prediction has no correlation: 0/0 counts as 0, not NaN.
    flat = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert (flat["pearson"], flat["spearman"]) == (0.0, 0.0)


def test_regression_agrees_with_scipy_on_random_values_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(3, 40))
        truth = rng.integers(0, 6, n).astype(float)  # STS-style scores: many ties
        guess = np.round(truth + rng.normal(0, 1.5, n), 1)
        if np.ptp(truth) == 0 or np.ptp(guess) == 0:
            continue
        result = regression_metrics(truth, guess)
        assert result["pearson"] == pytest.approx(stats.pearsonr(truth, guess)[0])
        assert result["spearman"] == pytest.approx(stats.spearmanr(truth, guess)[0])


def test_multilabel_agrees_with_sklearn_on_random_sets():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(1)
    labels = list("vwxyz")
    for _ in range(50):
        n = rng.randint(1, 12)
        y_true = [rng.sample(labels, rng.randint(0, 3)) for _ in range(n)]
        y_pred = [rng.sample(labels, rng.randint(0, 3)) for _ in range(n)]
        gold = np.array([[label in row for label in labels] for row in y_true])
        guess = np.array([[label in row for label in labels] for row in y_pred])
        result = multilabel_metrics(y_true, y_pred, labels)
        p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(
            gold, guess, average="micro", zero_division=0
        )
        assert (
            result["micro_precision"],
            result["micro_recall"],
            result["micro_f1"],
        ) == pytest.approx((p, r, f))
        present = (gold | guess).any(axis=0)  # sklearn would average all 5 labels
        expected_macro = (
            sklearn_metrics.f1_score(
                gold[:, present], guess[:, present], average="macro", zero_division=0
            )
            if present.any()
            else 0.0
        )
        assert result["macro_f1"] == pytest.approx(expected_macro)
        assert result["exact_match"] == pytest.approx(
            sklearn_metrics.accuracy_score(gold, guess)
        )  # subset accuracy


def _random_sentences(rng: random.Random, scheme: str, count: int) -> list[list[str]]:
    """Sentences built from well-formed entities, O and stray tags, so that both the
    clean and the ill-formed paths of the scheme are exercised."""
    prefixes = "BI" if scheme == "BIO" else "BIES"
    stray = [f"{p}-{t}" for p in prefixes for t in ("PER", "geo-loc")]
    sentences = []
    for _ in range(count):
        tags: list[str] = []
        length = rng.randint(0, 10)
        while len(tags) < length:
            kind, size = rng.choice(("PER", "geo-loc")), rng.randint(1, 3)
            piece = rng.random()
            if piece < 0.3:
                tags.append("O")
            elif piece < 0.5:
                tags.append(rng.choice(stray))
            elif scheme == "BIO":
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (size - 1)
            elif size == 1:
                tags.append(f"S-{kind}")
            else:
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (size - 2) + [f"E-{kind}"]
        sentences.append(tags)
    return sentences


def _noisy_copy(
    rng: random.Random, sentences: list[list[str]], scheme: str
) -> list[list[str]]:
    """Predictions: the gold tags with about one in five replaced at random."""
    prefixes = "BI" if scheme == "BIO" else "BIES"
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "geo-loc", "ORG")]
    return [
        [rng.choice(tags) if rng.random() < 0.2 else tag for tag in sentence]
        for sentence in sentences
    ]


def _assert_matches_seqeval_report(result: dict, report: dict) -> None:
    assert result["f1"] == pytest.approx(report["micro avg"]["f1-score"])
    assert result["precision"] == pytest.approx(report["micro avg"]["precision"])
    assert result["recall"] == pytest.approx(report["micro avg"]["recall"])
    types = {k for k in report if not k.endswith(" avg")}
    assert set(result["per_type"]) == types
    for kind in types:
        assert result["per_type"][kind] == pytest.approx(
            {
                "precision": report[kind]["precision"],
                "recall": report[kind]["recall"],
                "f1": report[kind]["f1-score"],
                "support": report[kind]["support"],
            }
        )


def test_bio_agrees_with_seqeval_default_mode():
    pytest.importorskip("seqeval")
    from seqeval.metrics import classification_report, f1_score
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(2)
    true_tags = _random_sentences(rng, "BIO", 300)
    pred_tags = _noisy_copy(rng, true_tags, "BIO")
    for tags in true_tags + pred_tags:
        expected = [(kind, start, end + 1) for kind, start, end in get_entities(tags)]
        assert extract_entities(tags, "BIO") == sorted(expected, key=lambda e: e[1])
    result = entity_metrics(true_tags, pred_tags, "BIO")
    assert result["f1"] == pytest.approx(
        f1_score(true_tags, pred_tags, zero_division=0)
    )
    _assert_matches_seqeval_report(
        result,
        classification_report(true_tags, pred_tags, output_dict=True, zero_division=0),
    )


def test_bioes_agrees_with_seqeval_strict_iobes():
    pytest.importorskip("seqeval")
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOBES, Tokens

    rng = random.Random(3)
    true_tags = _random_sentences(rng, "BIOES", 300)
    pred_tags = _noisy_copy(rng, true_tags, "BIOES")
    for tags in true_tags + pred_tags:
        expected = [(e.tag, e.start, e.end) for e in Tokens(tags, IOBES).entities]
        assert extract_entities(tags, "BIOES") == expected
    _assert_matches_seqeval_report(
        entity_metrics(true_tags, pred_tags, "BIOES"),
        classification_report(
            true_tags,
            pred_tags,
            output_dict=True,
            mode="strict",
            scheme=IOBES,
            zero_division=0,
        ),
    )
