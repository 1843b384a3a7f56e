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
    # 。 after a closing quote, a percent sign or a bracket ends a sentence too (4%
    # of People's Daily's sentence ends; they used to run into the next sentence);
    # ASCII ! ? end one after a Chinese character, not inside English.
    assert split_sentences("他说“好”。增长５０％。（图）。完了!对吗?OK! fine") == [
        "他说“好”。",
        "增长５０％。",
        "（图）。",
        "完了!",
        "对吗?",
        "OK! fine",
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
    # The same files saved with a byte-order mark (as Windows editors save UTF-8):
    # the JSONL one used to be refused as not JSON at line 1.
    for path in (bert, jsonl):
        marked = tmp_path / ("bom-" + path.name)
        marked.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        assert list(read_documents(str(marked))) == expected


def test_gz_globs_and_directories_stream_in_order(tmp_path):
    (tmp_path / "d").mkdir()
    with gzip.open(tmp_path / "d" / "1.txt.gz", "wt") as f:
        f.write("One.\n\nTwo.\n")
    (tmp_path / "d" / "2.txt").write_text("Three.\n")
    # Hidden files and folders are not corpus: a cloned corpus's .git objects, an
    # editor's swap file, a notebook's checkpoints (they used to be read as text).
    for hidden in (".git/objects/ab/cdef", ".2.txt.swp", "sub/.ipynb_checkpoints/x"):
        (tmp_path / "d" / hidden).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / hidden).write_text("Hidden.\n")
    (tmp_path / "d" / "sub" / "3.txt").write_text("Four.\n")
    assert list(read_documents(str(tmp_path / "d"))) == [
        ["One."],
        ["Two."],
        ["Three."],
        ["Four."],
    ]
    assert list(read_documents(str(tmp_path / "d" / "*.gz"))) == [["One."], ["Two."]]
    # A file named twice (the folder, then one of its files) is read once.
    twice = [str(tmp_path / "d"), str(tmp_path / "d" / "2.txt")]
    assert list(read_documents(twice)) == list(read_documents(str(tmp_path / "d")))


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
    path.write_text('{"text": "fine"}\n["a list"]\n')
    with pytest.raises(KblError, match=r"c\.jsonl:2: expected a JSON object.*list"):
        list(read_documents(str(path)))
    path.write_text('{"text": "fine"}\n\n{"body": "x"}\n')
    with pytest.raises(KblError, match=r"c\.jsonl:3: .*string 'text' field"):
        list(read_documents(str(path)))
    with pytest.raises(KblError, match="no such file"):
        list(read_documents(str(tmp_path / "missing.txt")))
    with pytest.raises(KblError, match="matches no files"):
        list(read_documents(str(tmp_path / "*.nothing")))


def test_interleaved_reading_mixes_files_and_keys_documents_by_file(tmp_path):
    """Several files are read in turn (a document from each), and every document is
    keyed by (file number, document number in the file): the held-out split hashes
    that key, so it is the same whichever worker reads the file, in any order."""
    from keras_bert_lite.data.corpus import read_indexed_documents
    from keras_bert_lite.data.pretraining import _shard_files, is_held_out

    for name, docs in (("a", 3), ("b", 1), ("c", 2)):
        (tmp_path / f"{name}.txt").write_text(
            "\n\n".join(f"{name}{i} one.\n{name}{i} two." for i in range(docs))
        )
    files = _shard_files(str(tmp_path), None)
    read = [(key, doc[0]) for key, doc in read_indexed_documents(files, cycle=2)]
    assert read == [
        ((0, 0), "a0 one."),
        ((1, 0), "b0 one."),
        ((0, 1), "a1 one."),  # b ran out: c takes its place from the next round
        ((0, 2), "a2 one."),
        ((2, 0), "c0 one."),
        ((2, 1), "c1 one."),
    ]
    worker = [
        key for key, _ in read_indexed_documents(_shard_files(str(tmp_path), (1, 2)))
    ]
    assert worker == [(1, 0)]
    keys = [key for key, _ in read]
    held = {k for k in keys if is_held_out(k, 0.5, seed=3)}
    assert 0 < len(held) < len(keys)  # the key, not the reading order, decides
    assert held == {k for k in reversed(keys) if is_held_out(k, 0.5, seed=3)}
