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


def test_bad_vocabularies_are_rejected_with_the_line(tmp_path):
    with pytest.raises(KblError, match="must start with"):
        check_vocabulary(["hello", "[PAD]"])
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tiny_vocabulary() + ["the"]) + "\n")
    with pytest.raises(KblError, match=r"line \d+: token 'the' repeats"):
        read_vocabulary(str(path))
    with pytest.raises(KblError, match="not found"):
        read_vocabulary(str(tmp_path / "missing.txt"))
