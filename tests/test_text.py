import numpy as np
import pytest

from keras_bert_lite.errors import KblError
from keras_bert_lite.text import BertTokenizer, learn_vocabulary, read_vocabulary
from keras_bert_lite.text.tokenizer import SPECIAL_TOKENS, check_vocabulary
from tests.conftest import tiny_vocabulary


def tokens(tokenizer, text):
    return tokenizer.id_to_token(tokenizer([text]).flat_values.numpy())


def test_unknown_words_split_into_known_pieces_else_unk():
    tokenizer = BertTokenizer(tiny_vocabulary())
    assert tokens(tokenizer, "unaffable") == ["un", "##aff", "##able"]
    assert tokens(tokenizer, "Hello, World!") == ["hello", ",", "world", "!"]
    assert tokens(tokenizer, "xylophone cats") == ["[UNK]", "cat", "##s"]


def test_cjk_characters_become_single_tokens_and_accents_are_stripped():
    tokenizer = BertTokenizer(tiny_vocabulary() + ["cafe"])
    assert tokens(tokenizer, "中国人") == ["中", "国", "人"]
    assert tokens(tokenizer, "Café") == ["cafe"]


def test_cased_tokenizer_keeps_case():
    tokenizer = BertTokenizer(tiny_vocabulary() + ["Hello"], lowercase=False)
    assert tokens(tokenizer, "Hello hello") == ["Hello", "hello"]


def test_learned_vocabulary_has_specials_first_and_splits_cjk():
    sentences = [
        "The walking dogs walked home.",
        "我们爱北京。",
        "Walking is good.",
    ] * 30
    vocab = learn_vocabulary(sentences, 120)
    assert tuple(vocab[:5]) == SPECIAL_TOKENS
    assert len(vocab) == len(set(vocab))
    assert {"我", "们", "北", "京"} <= set(vocab)
    assert "walking" in vocab and "Walking" not in vocab
    cased = learn_vocabulary(sentences, 120, lowercase=False)
    assert "Walking" in cased
    # The smallest size is the one the error names (every character is still kept).
    assert {"我", "w", "."} <= set(learn_vocabulary(sentences, 16))
    with pytest.raises(KblError, match="size 15 is too small: it takes at least 16"):
        learn_vocabulary(sentences, 15)


def test_bad_vocabularies_are_rejected_with_the_line(tmp_path):
    with pytest.raises(KblError, match="must start with"):
        check_vocabulary(["hello", "[PAD]"])
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tiny_vocabulary() + ["the"]) + "\n")
    with pytest.raises(KblError, match=r"line \d+: token 'the' repeats"):
        read_vocabulary(str(path))
    with pytest.raises(KblError, match="not found"):
        read_vocabulary(str(tmp_path / "missing.txt"))
    # A byte-order mark (an editor's) is not part of [PAD]; it used to be refused as
    # "must start with [PAD] ..., found [PAD] ..." (the mark invisible).
    marked = tmp_path / "marked.txt"
    marked.write_bytes(("\ufeff" + "\r\n".join(tiny_vocabulary())).encode("utf-8"))
    assert read_vocabulary(str(marked)) == tiny_vocabulary()


def test_a_mixed_vocabulary_spends_no_token_on_continuations_that_never_occur():
    # English and Chinese news: the learner's alphabet holds ~2,000 CJK characters.
    # tensorflow-text's learner gives each a "##" twin, which the tokenizer never
    # emits (a CJK character always stands alone); at this size the twins took the
    # whole budget, and English was spelled out letter by letter ("a ##n ##d").
    import gzip
    import itertools

    from tests.conftest import shared_file

    def lines(path, n):
        with gzip.open(shared_file(*path), "rt", encoding="utf-8") as f:
            return [line.strip() for line in itertools.islice(f, n) if line.strip()]

    english = lines(("pretrain", "en", "sotu.txt.gz"), 3000)
    chinese = lines(("pretrain", "zh", "peoples_daily_199801.txt.gz"), 2000)
    vocab = learn_vocabulary(english + chinese, 4000)
    assert len(vocab) <= 4000
    tokenizer = BertTokenizer(vocab)
    assert tokens(tokenizer, "and the people") == ["and", "the", "people"]
    assert tokens(tokenizer, "人民。") == ["人", "民", "。"]

    # What was left out is exactly what is never used: given back every "##c" of a
    # one-character token c, the tokenizer emits none of them on the corpus and
    # tokenizes it as before.
    vocabulary = set(vocab)
    twins = [f"##{t}" for t in vocab if len(t) == 1 and f"##{t}" not in vocabulary]
    assert "##人" in twins and "##。" in twins and "##a" not in twins
    assert len(twins) > 1500
    given_back = BertTokenizer(vocab + twins)
    for corpus in (english, chinese):
        ids = tokenizer(corpus).flat_values.numpy()
        np.testing.assert_array_equal(given_back(corpus).flat_values.numpy(), ids)
