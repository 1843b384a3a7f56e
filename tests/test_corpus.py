import gzip
import json
import logging

import pytest

from keras_bert_lite.data import CorpusStats, read_documents, split_sentences
from keras_bert_lite.errors import KblError


def test_sentence_splitter_handles_english_abbreviations_and_chinese():
    text = 'Mr. Smith went to Washington. He said "Hi!" Then J. Doe left? Yes.'
    assert split_sentences(text) == [
        "Mr. Smith went to Washington.",
        'He said "Hi!"',
        "Then J. Doe left?",
        "Yes.",
    ]
    assert split_sentences("我们爱北京！你好吗？“好的。”他说") == [
        "我们爱北京！",
        "你好吗？",
        "“好的。”",
        "他说",
    ]


def test_bert_format_jsonl_and_plain_text_give_the_same_documents(tmp_path):
    bert = tmp_path / "a.txt"
    bert.write_text("First one.\nSecond one.\n\n\n\nOther doc.\n")
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(
        json.dumps({"text": "First one. Second one."})
        + "\n\n"
        + json.dumps({"text": "Other doc."})
        + "\n"
    )
    plain = tmp_path / "c.text"
    plain.write_text(
        "First one. Second one. Still the first\nparagraph here.\n\nOther doc. "
        "More text. And more. Again here. Last one.\n"
    )
    expected = [["First one.", "Second one."], ["Other doc."]]
    assert list(read_documents(str(bert))) == expected
    assert list(read_documents(str(jsonl))) == expected
    docs = list(read_documents(str(plain)))
    assert docs[0] == ["First one.", "Second one.", "Still the first paragraph here."]
    assert len(docs[1]) == 5


def test_gz_globs_and_directories_stream_in_order(tmp_path):
    (tmp_path / "d").mkdir()
    with gzip.open(tmp_path / "d" / "1.txt.gz", "wt") as f:
        f.write("One.\n\nTwo.\n")
    (tmp_path / "d" / "2.txt").write_text("Three.\n")
    assert list(read_documents(str(tmp_path / "d"))) == [["One."], ["Two."], ["Three."]]
    assert list(read_documents(str(tmp_path / "d" / "*.gz"))) == [["One."], ["Two."]]


def test_bad_bytes_are_replaced_counted_and_named(tmp_path, caplog):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"Good line.\nBad \xff\xfe line.\n\n\n\n  \n\nLast.\n")
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING, logger="keras_bert_lite"):
        docs = list(read_documents(str(path), stats=stats))
    assert docs == [["Good line.", "Bad \ufffd\ufffd line."], ["Last."]]
    assert stats.replaced_bytes_lines == {str(path): 1}
    assert str(path) in caplog.text


def test_empty_jsonl_documents_are_skipped_and_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "A b."}\n{"text": "   "}\n{"text": "C d."}\n')
    stats = CorpusStats()
    assert len(list(read_documents(str(path), stats=stats))) == 2
    assert stats.empty_documents == 1 and stats.documents == 2


def test_bad_input_names_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(KblError, match=r"c\.jsonl:2: not valid JSON"):
        list(read_documents(str(path)))
    with pytest.raises(KblError, match="no such file"):
        list(read_documents(str(tmp_path / "missing.txt")))
    with pytest.raises(KblError, match="matches no files"):
        list(read_documents(str(tmp_path / "*.nothing")))
