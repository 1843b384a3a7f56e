"""The characters that raw text splits into words of their own: CJK ideographs and
the punctuation at a word's edges.

One definition for the words of raw text (`data.tasks.words_with_offsets`, which
`kbl predict` tags), their in-graph twin (`export.text_graph.word_spans`) and the
character-level F1 of Chinese QA answers (`training.metrics`). The ranges are
BERT's `_is_chinese_char`, which tensorflow-text's BERT pre-tokenizer applies: the
unified ideographs with extensions A to E and the compatibility blocks. (Yijing
hexagrams, U+4DC0-4DFF, sit between extension A and the main block and are not
split; extension F and later are not either.) `tests/test_task_data.py` checks the
ranges against the tokenizer at each boundary.

A raw-text word's opening and closing punctuation (`edge_punctuation`) are words of
their own (`data.tasks.words_with_offsets`), as CoNLL files write them; the
tokenizer splits them off too (`tests/test_task_data.py` checks each).

Importing this module loads no TensorFlow.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# A regular-expression character class body: "[" + CJK_CLASS + "]".
CJK_CLASS = "".join(f"{chr(low)}-{chr(high)}" for low, high in CJK_RANGES)


def is_cjk(ch: str) -> bool:
    """Whether the character `ch` is one the tokenizer splits off on its own."""
    code = ord(ch)
    return any(low <= code <= high for low, high in CJK_RANGES)


# Quotes that open and close alike, and the marks that end a clause or sentence.
_QUOTES = "\"'`"
_STOPS = ".,;:!?\u2026\u3002\uff0c\u3001\uff1b\uff1a\uff01\uff1f\uff61\uff64"


@functools.lru_cache(maxsize=1)
def edge_punctuation() -> tuple[frozenset[str], frozenset[str]]:
    """(opening, closing): the punctuation split off the start of a raw-text word
    (opening brackets and quotes, Unicode Ps and Pi, the ASCII quotes, inverted ! and
    ?) and off its end (closing brackets and quotes, Pe and Pf, the ASCII quotes,
    and the stops: . , ; : ! ? and the ellipsis, with their CJK and full-width
    forms). The tokenizer splits each of them off as punctuation."""
    categories = {"Ps": [], "Pi": [], "Pe": [], "Pf": []}
    for c in range(sys.maxunicode + 1):
        kind = unicodedata.category(chr(c))
        if kind in categories:
            categories[kind].append(chr(c))
    opening = frozenset(
        categories["Ps"] + categories["Pi"] + list(_QUOTES + "\u00a1\u00bf")
    )
    closing = frozenset(categories["Pe"] + categories["Pf"] + list(_QUOTES + _STOPS))
    return opening, closing
