"""Fine-tuning data: readers, features for the three tasks, and the way back."""

import json
import math
import re

import numpy as np
import pytest

from keras_bert_lite.data.tasks import (
    QAExample,
    QAStats,
    check_labels,
    classification_predictions,
    collect_labels,
    decode_squad,
    detect_scheme,
    encode_classification,
    encode_squad,
    encode_tagging,
    merge_tagging_predictions,
    read_classification,
    read_conll,
    read_labels,
    read_squad,
    sample_records,
    write_labels,
)
from keras_bert_lite.errors import KblError
from keras_bert_lite.text import SPECIAL_TOKENS, BertTokenizer
from tests.conftest import shared_file

WORDS = (
    "the a is in of cat dog run walk hello world un ##aff ##able ##s ##ing "
    ", . ! ? where which cafe muller zurich "
    "中 国 我 爱 北 京 天 安 门 。 哪 里 饭 店 在"
).split()
VOCAB = list(SPECIAL_TOKENS) + WORDS
PAD, UNK, CLS, SEP = 0, 1, 2, 3


def ids(*tokens: str) -> list[int]:
    return [VOCAB.index(t) for t in tokens]


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer(VOCAB)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def gold_logits(features, high=10.0):
    """Logits peaking at the gold start/end of each window ([CLS] where it has none)."""
    start = np.full(features.token_ids.shape, -high, np.float32)
    end = start.copy()
    rows = np.arange(len(features))
    start[rows, features.start_positions] = high
    end[rows, features.end_positions] = high
    return start, end


# === Token classification ===


def test_first_piece_of_each_word_carries_its_tag_and_maps_back(tokenizer):
    # A word that tokenizes to nothing must still get one piece.
    assert tokenizer(["\u200b"]).row_lengths().numpy().tolist() == [0]
    words = ["Unaffable", "cats", "中", "国", "xylophone", "\u200b", "run"]
    tags = ["B-PER", "I-PER", "B-LOC", "I-LOC", "O", "O", "O"]
    labels = collect_labels([(words, tags)])
    assert labels == ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    f = encode_tagging([words], [tags], tokenizer, seq_len=14, label_index=labels)
    assert len(f) == 1
    assert f.token_ids[0].tolist() == (
        [CLS]
        + ids("un", "##aff", "##able", "cat", "##s", "中", "国")
        + [UNK, UNK]
        + ids("run")
        + [SEP, PAD, PAD]
    )
    assert f.labels[0].tolist() == [0, 1, 0, 0, 3, 0, 0, 2, 4, 4, 4, 0, 0, 0]
    assert f.label_weights[0].tolist() == [0, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert f.word_index[0].tolist() == [-1, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, -1, -1, -1]
    assert f.padding_mask[0].tolist() == [1] * 12 + [0, 0]
    assert f.segment_ids.sum() == 0
    assert merge_tagging_predictions(f, f.labels, [7]) == [[1, 3, 0, 2, 4, 4, 4]]
    # Without tags: the same positions predict, nothing is labelled.
    g = encode_tagging([words], None, tokenizer, seq_len=14, label_index=None)
    assert (g.label_weights == f.label_weights).all() and g.labels.sum() == 0


def test_long_sentence_is_windowed_and_each_word_predicted_by_its_max_context_window(
    tokenizer,
):
    words = ["cat", "dog", "run", "walk"] * 6  # 24 pieces: three times seq_len
    f = encode_tagging([words], None, tokenizer, seq_len=8, label_index=None)
    # Windows of 6 pieces, 3 apart: starts 0, 3, ..., 18.
    assert len(f) == 7 and f.sentence_index.tolist() == [0] * 7
    assert f.word_index[:, 1].tolist() == [0, 3, 6, 9, 12, 15, 18]
    assert f.label_weights.sum() == 24
    # Window r votes label r everywhere: the merge says which window owns each word.
    scores = np.zeros(f.token_ids.shape + (7,), np.float32)
    scores[np.arange(7), :, np.arange(7)] = 1.0
    owners = merge_tagging_predictions(f, scores, [24])
    assert owners == [
        [0] * 5 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [5] * 3 + [6] * 4
    ]


def test_multi_piece_words_in_long_sentences_get_exactly_one_prediction(tokenizer):
    long = ["unaffable", "cat", "walking"] * 10  # 60 pieces, seq_len 20
    short = ["hello", "world"]
    tags = [["O"] * 30, ["O", "O"]]
    f = encode_tagging(
        [long, short], tags, tokenizer, seq_len=20, label_index=["O"], stride=5
    )
    assert f.sentence_index.tolist() == [0] * 10 + [1]  # starts 0, 5, ..., 45
    for s, n in ((0, 30), (1, 2)):
        rows = f.sentence_index == s
        weighted = f.word_index[rows][f.label_weights[rows] > 0]
        assert sorted(weighted.tolist()) == list(range(n))  # once each
    predicting = f.token_ids[f.label_weights > 0]
    assert not any(VOCAB[i].startswith("##") for i in predicting.tolist())
    predictions = np.where(f.word_index >= 0, f.word_index % 5, 0)
    assert merge_tagging_predictions(f, predictions, [30, 2]) == [
        [j % 5 for j in range(30)],
        [0, 1],
    ]


# === Sentence (pair) classification ===


def test_pairs_are_truncated_longest_first_from_the_end(tokenizer):
    records = [
        {"text_a": "the cat the dog the cat", "text_b": "run walk", "label": "x"},
        {
            "text_a": "the cat the dog the cat",
            "text_b": "hello world " * 3,
            "label": "y",
        },
        {
            "text_a": "run walk",
            "text_b": "the cat the dog the cat the dog the",
            "label": "x",
        },
    ]
    f = encode_classification(records, tokenizer, seq_len=10, label_index=["x", "y"])
    assert f["token_ids"].tolist() == [
        [CLS]
        + ids("the", "cat", "the", "dog", "the")
        + [SEP]
        + ids("run", "walk")
        + [SEP],
        [CLS]
        + ids("the", "cat", "the", "dog")
        + [SEP]
        + ids("hello", "world", "hello")
        + [SEP],
        [CLS]
        + ids("run", "walk")
        + [SEP]
        + ids("the", "cat", "the", "dog", "the")
        + [SEP],
    ]
    assert f["segment_ids"].tolist() == [
        [0] * 7 + [1] * 3,
        [0] * 6 + [1] * 4,
        [0] * 4 + [1] * 6,
    ]
    assert f["padding_mask"].min() == 1
    assert f["labels"].tolist() == [0, 1, 0]


def test_predictions_say_where_a_cut_text_stops_being_read(tokenizer):
    """`classification_cuts` names the character after the last piece a classifier
    reads, as `encode_classification` cuts: single texts at seq_len - 2 pieces,
    pairs longest first (kbl predict on a long review used to give a label with no
    word that most of it went unread)."""
    from keras_bert_lite.data.tasks import classification_cuts

    texts = ["the cat", "the unaffable dog", "北京天安门", "Café Müller, Zürich!"]
    # seq_len 5 reads 3 pieces: "the un ##aff" | "北 京 天" | "cafe muller ,".
    cuts = classification_cuts(tokenizer, texts, seq_len=5)
    assert cuts == [{}, {"truncated_at": 9}, {"truncated_at": 3}, {"truncated_at": 12}]
    assert [
        t[: c.get("truncated_at", len(t))] for t, c in zip(texts, cuts, strict=True)
    ] == [
        "the cat",
        "the unaff",
        "北京天",
        "Café Müller,",
    ]
    # Pairs of the test above (seq_len 10): A cut to 5 of 6 pieces; A to 4 and B to
    # 3 of 6; B to 5 of 9. A pair that fits is {}.
    a = ["the cat the dog the cat", "the cat the dog the cat", "run walk", "the"]
    b = ["run walk", "hello world " * 3, "the cat the dog the cat the dog the", "dog"]
    assert classification_cuts(tokenizer, a, 10, b) == [
        {"truncated_at": 19},
        {"truncated_at": 15, "truncated_at_b": 17},
        {"truncated_at_b": 19},
        {},
    ]
    # A budget of one piece for both texts leaves the second none of its own.
    assert classification_cuts(tokenizer, ["the cat"], 4, ["dog"]) == [
        {"truncated_at": 3, "truncated_at_b": 0}
    ]


def test_joined_words_split_back_into_the_same_words():
    from keras_bert_lite.data.tasks import join_words, words_with_offsets

    for words in (
        ["Alice", "flew", "to", "Paris", "."],
        ["中", "国", "人", "在", "New", "York", "，", "2", "0", "日", "。"],
        ["李", "白"],
        [],
    ):
        text = join_words(words)
        assert [text[s:e] for s, e in words_with_offsets(text)] == words
    assert join_words(["北", "京", "and", "上", "海"]) == "北京 and 上海"


def test_raw_text_words_split_off_their_opening_and_closing_punctuation():
    """Raw text's words split off the punctuation that CoNLL files write as words
    of their own, so that an entity is "Paris", not "Paris," or "(Paris". They used
    to be whitespace runs: the sentence-final full stop joined the last entity."""
    from keras_bert_lite.data.tasks import words_with_offsets

    def words(text):
        return [text[s:e] for s, e in words_with_offsets(text)]

    assert words("I flew to London.") == ["I", "flew", "to", "London", "."]
    assert words('("Paris"), then Rome!') == [
        *("(", '"', "Paris", '"', ")", ","),
        *("then", "Rome", "!"),
    ]
    assert words("«Zürich»; ¿Qué? 'Bob'") == [
        *("«", "Zürich", "»", ";", "¿", "Qué", "?", "'", "Bob", "'"),
    ]
    # Between CJK characters, punctuation stands alone; two marks together are
    # one run of nothing but punctuation, one word.
    text = "李白说“北京”很好，“好”。"
    assert words(text) == [*"李白说“北京”很好", "，“", "好", "”。"]
    # An abbreviation keeps its last full stop; a word with no other full stop
    # does not.
    assert words("The U.S., at 9 a.m.) etc.") == [
        *("The", "U.S.", ",", "at", "9", "a.m.", ")", "etc", "."),
    ]
    # Inside a word, and the marks tweets and code put first or last, stay.
    assert words("don't e-mail #tag @user 3.5 $5 5% C++ C# :) ... --") == [
        *("don't", "e-mail", "#tag", "@user", "3.5", "$5", "5%", "C++", "C#"),
        *(":)", "...", "--"),
    ]


def test_edge_punctuation_is_what_the_tokenizer_splits_off():
    """Each character split off a raw-text word is split off by the tokenizer too:
    a word's first piece is never shared with the punctuation before it."""
    from keras_bert_lite.cjk import edge_punctuation

    opening, closing = edge_punctuation()
    marks = sorted(opening | closing)
    assert len(opening) > 50 and len(closing) > 50  # Unicode's, not ASCII's alone
    tokenizer = BertTokenizer([*VOCAB, "x"])
    x = tokenizer.vocabulary.index("x")
    before = tokenizer([m + "x" for m in marks]).to_list()
    after = tokenizer(["x" + m for m in marks]).to_list()
    assert [p[-1:] for p in before] == [[x]] * len(marks)
    assert [p[:1] for p in after] == [[x]] * len(marks)


def test_raw_text_words_split_cjk_where_the_tokenizer_does(tokenizer):
    """Raw text's words (what `kbl predict` tags; the QA metric's characters) split
    off exactly the ideographs the tokenizer splits off, at every edge of its
    ranges. They used to split U+3400-9FFF and U+F900-FAFF: the Yijing hexagrams
    too, which the tokenizer keeps together, and no supplementary-plane
    ideograph, which it splits (and the QA metric split U+20000-2FA1F)."""
    from keras_bert_lite.cjk import CJK_RANGES, is_cjk
    from keras_bert_lite.data.tasks import words_with_offsets
    from keras_bert_lite.training.metrics import squad_metrics

    edges = {c for low, high in CJK_RANGES for c in (low - 1, low, high, high + 1)}
    edges -= {0x33FF, 0xFB00}  # compatibility characters that normalize to letters
    characters = [chr(c) for c in sorted(edges | {0x4DC0, 0x4DFF, 0x2CEB0})]
    pieces = tokenizer([c * 2 for c in characters]).to_list()  # unknown: [UNK]s
    split = [len(p) == 2 for p in pieces]
    assert sum(split) == 2 * len(CJK_RANGES)  # each range's first and last
    assert [len(words_with_offsets(c * 2)) == 2 for c in characters] == split
    assert [is_cjk(c) for c in characters] == split
    # Character-level QA F1 counts each of them as a token, and the others as
    # part of a run: ["中", "𠀀", "a"] against ["中", "𠀀", "b"], then
    # ["中", "\U0002ceb0a"] against ["中", "\U0002ceb0b"] (extension F).
    for ideograph, f1 in (("\U00020000", 200 / 3), ("\U0002ceb0", 50.0)):
        scores = squad_metrics({"q": f"中{ideograph}a"}, {"q": [f"中{ideograph}b"]})
        assert scores["f1"] == pytest.approx(f1), hex(ord(ideograph))


def test_classification_predictions_by_hand():
    p = np.array([[0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    single = classification_predictions(["x", "y"], p, ["a", "b", "c"])
    assert [r["label"] for r in single] == ["b", "c"]
    assert list(single[0]["probabilities"]) == ["b", "a", "c"]  # most probable first
    # Multi-label: at or over the threshold, most probable first; none is a set too.
    multi = classification_predictions(
        ["x", "y"], p, ["a", "b", "c"], "multi_label", 0.2, pairs=["u", "v"]
    )
    assert [(r["text"], r["text_b"], r["labels"]) for r in multi] == [
        ("x", "u", ["b", "a"]),
        ("y", "v", ["c", "a", "b"]),
    ]
    assert "label" not in multi[0]
    none = classification_predictions(["x"], p[:1], ["a", "b", "c"], "multi_label", 0.8)
    assert none[0]["labels"] == []
    values = classification_predictions(
        ["x", "y"], np.array([[1.5], [-2.0]]), [], "regression"
    )
    assert values == [{"text": "x", "value": 1.5}, {"text": "y", "value": -2.0}]


def test_single_texts_regression_and_multi_label(tokenizer):
    f = encode_classification(
        [
            {"text": "Hello world, hello world!", "label": 0.5},
            {"text": "cat", "label": 2.0},
        ],
        tokenizer,
        seq_len=6,
    )
    assert f["token_ids"].tolist() == [
        [CLS] + ids("hello", "world", ",", "hello") + [SEP],
        [CLS] + ids("cat") + [SEP, PAD, PAD, PAD],
    ]
    assert f["padding_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    assert f["labels"].dtype == np.float32 and f["labels"].tolist() == [0.5, 2.0]
    g = encode_classification(
        [{"text": "cat", "label": ["a", "c"]}, {"text": "dog", "label": []}],
        tokenizer,
        seq_len=6,
        label_index=["a", "b", "c"],
    )
    assert g["labels"].tolist() == [[1, 0, 1], [0, 0, 0]]


# === Extractive QA ===


def qa_examples():
    cafe = "Café Müller, in Zürich!"
    return [
        QAExample("q1", "Where is Café Müller?", cafe, [("Zürich", 16)]),
        QAExample("q2", "Which café is in Zürich?", cafe, [("Café Müller", 0)]),
        QAExample("q3", "哪里?", "我爱北京天安门。", [("天安门", 4)]),
        QAExample("q4", "where?", "北京饭店在Zürich。", [("Zürich", 5)]),
        QAExample("q5", "where?", cafe, [], is_impossible=True),
    ]


def test_character_offsets_survive_tokens_and_spans_with_accents_and_chinese(tokenizer):
    examples = qa_examples()
    f = encode_squad(examples, tokenizer, seq_len=24, doc_stride=8, max_query_len=8)
    assert f.example_index.tolist() == [0, 1, 2, 3, 4]
    assert f.token_ids[0, :14].tolist() == (
        [CLS]
        + ids("where", "is", "cafe", "muller", "?")
        + [SEP]
        + ids("cafe", "muller", ",", "in", "zurich", "!")
        + [SEP]
    )
    assert f.segment_ids[0, :15].tolist() == [0] * 7 + [1] * 7 + [0]
    cafe_chars = [[0, 4], [5, 11], [11, 12], [13, 15], [16, 22], [22, 23]]
    assert f.token_to_char[0, 7:13].tolist() == cafe_chars
    assert (f.token_to_char[0, :7] == -1).all()
    assert (f.token_to_char[0, 13:] == -1).all()
    assert f.token_to_char[2, 5:13].tolist() == [[i, i + 1] for i in range(8)]
    assert f.token_to_char[3, 4:11].tolist() == [
        [0, 1],
        [1, 2],
        [2, 3],
        [3, 4],
        [4, 5],
        [5, 11],
        [11, 12],
    ]
    assert f.start_positions.tolist() == [11, 8, 9, 9, 0]
    assert f.end_positions.tolist() == [11, 9, 11, 9, 0]
    assert f.max_context[0, 7:13].all()

    answers = decode_squad(f, *gold_logits(f), examples)
    assert answers["q1"] == {"text": "Zürich", "start": 16, "end": 22, "score": 20.0}
    assert answers["q2"]["text"] == "Café Müller"
    assert (answers["q2"]["start"], answers["q2"]["end"]) == (0, 11)
    assert answers["q3"]["text"] == "天安门"
    assert (answers["q4"]["text"], answers["q4"]["start"]) == ("Zürich", 5)
    assert answers["q5"] == {"text": "", "start": -1, "end": -1, "score": 20.0}


def test_null_answer_wins_only_by_more_than_the_threshold(tokenizer):
    example = qa_examples()[:1]
    f = encode_squad(example, tokenizer, seq_len=24, max_query_len=8)
    start = np.zeros(f.token_ids.shape, np.float32)
    end = start.copy()
    start[0, 11] = end[0, 11] = 2.0  # span "Zürich" scores 4
    start[0, 0] = end[0, 0] = 3.0  # null scores 6
    assert decode_squad(f, start, end, example)["q1"]["text"] == ""
    assert decode_squad(f, start, end, example, null_threshold=2.5)["q1"]["text"] == (
        "Zürich"
    )
    assert (
        decode_squad(f, start, end, example, null_threshold=math.inf)["q1"]["score"]
        == 4.0
    )


def fixture_vocabulary(examples) -> list[str]:
    words = set()
    for ex in examples:
        words.update(re.findall(r"\w+|[^\w\s]", f"{ex.question} {ex.context}".lower()))
    # The gold answer "Father Julius Nieuwl" stops inside "Nieuwland": split the word
    # into pieces so the answer ends on a piece boundary and can round-trip exactly.
    words.discard("nieuwland")
    return list(SPECIAL_TOKENS) + sorted(words) + ["nieuwl", "##and"]


def test_squad_fixture_answers_round_trip_through_features_and_decoding():
    stats = QAStats()
    examples = read_squad(shared_file("qa", "en", "squad_fixture.json"), stats)
    assert len(examples) == 5 and stats.fixed_offsets == 0 and stats.impossible == 0
    assert examples[1].answers[0] == ("a golden statue of the Virgin Mary", 92)
    assert len(examples[1].answers) == 3
    tok = BertTokenizer(fixture_vocabulary(examples))
    for seq_len, stride in ((384, 128), (64, 16)):
        f = encode_squad(
            examples, tok, seq_len=seq_len, doc_stride=stride, max_query_len=24
        )
        found = set()
        for r in np.flatnonzero(f.start_positions):
            ex = examples[f.example_index[r]]
            s, e = f.start_positions[r], f.end_positions[r]
            text = ex.context[f.token_to_char[r, s, 0] : f.token_to_char[r, e, 1]]
            assert text == ex.answers[0][0]
            found.add(ex.id)
        assert found == {ex.id for ex in examples}
        if seq_len == 64:  # windows that do not hold the answer point at [CLS]
            assert len(f) > 10 and (f.start_positions == 0).sum() > 5
        answers = decode_squad(f, *gold_logits(f), examples)
        for ex in examples:
            text, start = ex.answers[0]
            assert answers[ex.id]["text"] == text
            assert answers[ex.id]["start"] == start


def test_unanswerable_questions_point_at_cls(tmp_path, tokenizer):
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "the cat walk in the world " * 8,
                        "qas": [
                            {
                                "id": "n1",
                                "question": "where is the dog?",
                                "answers": [],
                                "is_impossible": True,
                            },
                            {
                                "id": "p1",
                                "question": "which cat?",
                                "is_impossible": False,
                                "answers": [{"text": "cat walk", "answer_start": 4}],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    examples = read_squad(write(tmp_path, "v2.json", json.dumps(data)))
    assert examples[0].is_impossible and examples[0].answers == []
    f = encode_squad(examples, tokenizer, seq_len=24, doc_stride=6, max_query_len=8)
    rows = f.example_index == 0
    assert rows.sum() > 1
    assert (f.start_positions[rows] == 0).all() and (f.end_positions[rows] == 0).all()
    answers = decode_squad(f, *gold_logits(f), examples)
    assert answers["n1"]["text"] == "" and answers["n1"]["start"] == -1
    assert answers["p1"]["text"] == "cat walk"


# === Readers and label files ===


def test_classification_readers_jsonl_csv_tsv(tmp_path):
    path = write(
        tmp_path,
        "a.jsonl",
        '{"text": "fine", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n',
    )
    assert read_classification(path) == [
        {"text": "fine", "label": "pos", "line": 1},
        {"text": "bad", "label": "neg", "line": 3},
    ]
    # JSON lines named .json are classification records; a SQuAD document is not.
    from keras_bert_lite.data.tasks import is_squad
    from training.finetune import _read

    named = write(tmp_path, "a.json", open(path).read())
    assert _read("classify", named) == read_classification(path)
    squad = write(tmp_path, "q.json", '{\n  "version": "v2.0",\n  "data": []\n}\n')
    assert not is_squad(named) and is_squad(squad)
    assert is_squad(write(tmp_path, "q1.json", '{"version": "v2.0", "data": []}\n'))
    with pytest.raises(KblError, match="q.json: the classify task reads JSONL"):
        _read("classify", squad)
    path = write(tmp_path, "b.csv", 'text,label\n"fine, really",pos\nbad,neg\n')
    assert [r["text"] for r in read_classification(path)] == ["fine, really", "bad"]
    # Written by hand, a space after each comma: the header still names its
    # columns, a quote after the space still quotes, and "neg " is the label "neg"
    # (the file used to be refused for a missing 'label', its column " label").
    path = write(
        tmp_path, "s.csv", 'text, label\n"fine, ""really""", pos\nbad , neg \n'
    )
    assert read_classification(path) == [
        {"text": 'fine, "really"', "label": "pos", "line": 2},
        {"text": "bad ", "label": "neg", "line": 3},
    ]
    path = write(tmp_path, "c.tsv", "text_a\ttext_b\tlabel\nA\tB\tsame\n")
    assert read_classification(path) == [
        {"text_a": "A", "text_b": "B", "label": "same", "line": 2}
    ]
    # STS-B's TSV: a score column of decimals is regression, as a JSON float is
    # (it was read as 3 classes named "3.800", "4" and "0.5e1"); whole numbers
    # alone, or numbers beside words, stay classes.
    path = write(
        tmp_path,
        "sts.tsv",
        "text_a\ttext_b\tlabel\nA\tB\t3.800\nC\tD\t4\nE\tF\t0.5e1\nG\tH\t\n",
    )
    assert [r.get("label") for r in read_classification(path, False)] == [
        3.8,
        4.0,
        5.0,
        None,
    ]
    for labels in (["0", "1", "-1"], ["3.5", "good"], ["1.", "nan"]):
        rows = "".join(f"t{k},{label}\n" for k, label in enumerate(labels))
        path = write(tmp_path, "f.csv", "text,label\n" + rows)
        assert [r["label"] for r in read_classification(path)] == labels
    path = write(
        tmp_path, "e.jsonl", '{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n'
    )
    # Whole scores beside fractional ones are scores too (4 beside 3.5 used to be
    # refused: "a regression label, but line 1 has a single-label label").
    mixed = write(
        tmp_path, "m.jsonl", '{"text": "x", "label": 4}\n{"text": "y", "label": 3.5}\n'
    )
    assert [r["label"] for r in read_classification(mixed)] == [4.0, 3.5]
    # GLUE-style whole-number labels are classes, not regression targets.
    assert [r["label"] for r in read_classification(path)] == ["1", "0"]
    path = write(
        tmp_path,
        "d.jsonl",
        '{"text": "x", "label": 3.5}\n{"text": "y", "label": ["a", "b"]}\n',
    )
    with pytest.raises(
        KblError,
        match=r"d.jsonl:2: a multi-label label, but line 1 "
        "has a regression label",
    ):
        read_classification(path)


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            '{"text": "a", "label": "x"}\n{"text": "b", label: "x"}\n',
            r"bad.jsonl:2: not valid JSON",
        ),
        ('{"label": "x"}\n', r"bad.jsonl:1: field 'text' is missing"),
        (
            '{"text": "a", "label": "x"}\n{"text": "b"}\n',
            r"bad.jsonl:2: missing 'label'",
        ),
        (
            '{"text": "a", "label": "x"}\n'
            '{"text_a": "a", "text_b": "b", "label": "x"}\n',
            r"bad.jsonl:2: a pair \(text_a, text_b\) record, but line 1 is a "
            "single-text",
        ),
    ],
)
def test_classification_reader_errors_name_the_line(tmp_path, lines, message):
    with pytest.raises(KblError, match=message):
        read_classification(write(tmp_path, "bad.jsonl", lines))


def test_conll_reader_tags_and_errors(tmp_path):
    path = write(
        tmp_path,
        "a.conll",
        "-DOCSTART-\tO\n\nJohn\tB-PER\nlives\tO\n\n\nin O\nParis B-LOC\n",
    )  # a space separates where there is no tab
    assert read_conll(path) == [
        (["John", "lives"], ["B-PER", "O"]),
        (["in", "Paris"], ["O", "B-LOC"]),
    ]
    assert detect_scheme([["B-PER", "I-PER", "O"]]) == "BIO"
    assert detect_scheme([["S-PER", "O"], ["B-LOC", "E-LOC"]]) == "BIOES"
    with pytest.raises(KblError, match="'PER' is neither"):
        detect_scheme([["PER"]])
    bad = write(tmp_path, "bad.conll", "John\tB-PER\nlives\tO\n\nin\tO\tX\n")
    with pytest.raises(KblError, match=r"bad.conll:4: 3 fields where 2 are expected"):
        read_conll(bad)
    # CoNLL-2003's columns (token, POS, chunk, tag): the first and the last; a line
    # with other columns is named (the file was refused: "4 fields where 2").
    conll03 = write(
        tmp_path,
        "en.train.txt",
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
        "German JJ B-NP B-MISC\n",
    )
    assert read_conll(conll03) == [
        (["EU", "rejects"], ["B-ORG", "O"]),
        (["German"], ["B-MISC"]),
    ]
    bad = write(tmp_path, "bad3.conll", "EU NNP B-NP B-ORG\nrejects O\n")
    with pytest.raises(KblError, match=r"bad3.conll:2: 2 fields, but line 1 has 4"):
        read_conll(bad)
    bad = write(tmp_path, "bad1.conll", "John\tB-PER\nlives\n")
    with pytest.raises(KblError, match=r"bad1.conll:2: 1 field where 2"):
        read_conll(bad)
    # Sentences to predict on may come as tokens alone (a test file without tags).
    assert read_conll(bad, require_tags=False) == [(["John", "lives"], ["B-PER", ""])]
    # A BIO file for a BIOES model is refused (its tags are all known to the model);
    # BIOES files, all-O files and BIO models pass.
    from keras_bert_lite.data.tasks import check_scheme

    bio = [(["New", "York"], ["B-LOC", "I-LOC"])]
    check_scheme(bio, "BIO", "f")
    check_scheme([(["New", "York"], ["B-LOC", "E-LOC"])], "BIOES", "f")
    check_scheme([(["hi"], ["O"])], "BIOES", "f")
    with pytest.raises(KblError, match="f: the tags are BIO"):
        check_scheme(bio, "BIOES", "f")
    # A tag outside the schemes is named by file and line (it used to be neither).
    odd = write(tmp_path, "odd.conll", "John\tB-PER\n\nin\tO\nParis\tLOC\n")
    sentences = read_conll(odd)
    with pytest.raises(KblError, match=r"odd.conll:4: tag 'LOC' is neither"):
        detect_scheme([t for _, t in sentences], odd, [s.lines for s in sentences])


def squad_file(tmp_path, answer_start: int) -> str:
    data = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "In 1882, Albert Zahm built a wind tunnel.",
                        "qas": [
                            {
                                "id": "q-ok",
                                "question": "When?",
                                "answers": [{"text": "1882", "answer_start": 3}],
                            },
                            {
                                "id": "q-7",
                                "question": "Who?",
                                "answers": [
                                    {
                                        "text": "Albert Zahm",
                                        "answer_start": answer_start,
                                    }
                                ],
                            },
                        ],
                    }
                ]
            }
        ]
    }
    return write(tmp_path, "squad.json", json.dumps(data))


def test_squad_offsets_off_by_two_are_fixed_and_larger_mismatches_name_the_id(
    tmp_path, caplog
):
    stats = QAStats()
    examples = read_squad(squad_file(tmp_path, 11), stats)
    assert examples[1].answers == [("Albert Zahm", 9)] and stats.fixed_offsets == 1
    assert "1 answer_start offset(s)" in caplog.text
    with pytest.raises(
        KblError,
        match=r"question q-7: answer 'Albert Zahm' is not at "
        r"answer_start 14 .* occurs at character 9",
    ):
        read_squad(squad_file(tmp_path, 14))


def test_labels_round_trip_and_unknown_labels_name_file_and_line(tmp_path):
    path = write(
        tmp_path,
        "dev.jsonl",
        '{"text": "a", "label": "pos"}\n'
        '{"text": "b", "label": "neg"}\n\n{"text": "c", "label": "meh"}\n',
    )
    records = read_classification(path)
    labels_path = str(tmp_path / "run" / "labels.txt")
    write_labels(labels_path, ["neg", "pos"])
    assert read_labels(labels_path) == ["neg", "pos"]
    assert collect_labels(records) == ["meh", "neg", "pos"]
    with pytest.raises(
        KblError,
        match=r"dev.jsonl:4: label 'meh' is not one the model "
        "knows",
    ):
        check_labels(records, read_labels(labels_path), path)
    # CoNLL: the line of the word whose tag is unknown, past blank lines and
    # -DOCSTART-; sentences still unpack and compare as (words, tags) pairs.
    conll = write(tmp_path, "ner.conll", "-DOCSTART-\n\na\tO\n\n\nb\tO\nc\tB-X\n")
    sentences = read_conll(conll)
    assert sentences == [(["a"], ["O"]), (["b", "c"], ["O", "B-X"])]
    assert [s.lines for s in sentences] == [[3], [6, 7]]
    with pytest.raises(KblError, match=r"ner.conll:7: label 'B-X'"):
        check_labels(sentences, ["O"], conll)
    # Built in memory, a sentence has no lines: its number stands in.
    with pytest.raises(KblError, match=r"mem:2: label 'B-X'"):
        check_labels([(["a"], ["O"]), (["b", "c"], ["O", "B-X"])], ["O"], "mem")


def test_constrained_viterbi_never_puts_i_after_o_or_another_type():
    from keras_bert_lite.data.tasks import allowed_transitions, viterbi_decode

    labels = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    start, trans, end = allowed_transitions(labels, "BIO")
    # Greedy argmax would give O I-PER I-PER: an entity starting with I-.
    log_probs = np.log(
        np.array(
            [
                [0.05, 0.05, 0.05, 0.05, 0.80],
                [0.05, 0.30, 0.05, 0.55, 0.05],
                [0.05, 0.05, 0.05, 0.80, 0.05],
            ]
        )
    )
    best = [labels[i] for i in viterbi_decode(log_probs, start, trans, end)]
    assert best == ["O", "B-PER", "I-PER"]
    # I-LOC after B-PER is not allowed either: the type must continue.
    assert not trans[labels.index("B-PER"), labels.index("I-LOC")]
    assert trans[labels.index("B-LOC"), labels.index("I-LOC")]

    bioes = ["B-X", "E-X", "I-X", "O", "S-X"]
    start, trans, end = allowed_transitions(bioes, "BIOES")
    # A lone B-X at the end is ill-formed in BIOES: S-X is the allowed reading.
    log_probs = np.log(
        np.array([[0.05, 0.05, 0.05, 0.8, 0.05], [0.6, 0.05, 0.05, 0.05, 0.25]])
    )
    assert [bioes[i] for i in viterbi_decode(log_probs, start, trans, end)] == [
        "O",
        "S-X",
    ]


def test_sample_records_is_a_seeded_subset_in_file_order():
    records = [{"text": str(i), "label": "x"} for i in range(100)]
    sample = sample_records(records, 10, seed=3)
    assert len(sample) == 10
    assert sample == sorted(sample, key=lambda r: int(r["text"]))  # file order
    assert sample == sample_records(records, 10, seed=3)
    assert sample != sample_records(records, 10, seed=4)
    assert sample_records(records, None, seed=3) == records
    assert sample_records(records, 500, seed=3) == records
