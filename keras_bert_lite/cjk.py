"""The CJK ideographs that the tokenizer splits into words of their own.

One definition for the words of raw text (`data.tasks.words_with_offsets`, which
`kbl predict` tags), their in-graph twin (`export.text_graph.word_spans`) and the
character-level F1 of Chinese QA answers (`training.metrics`). The ranges are
BERT's `_is_chinese_char`, which tensorflow-text's BERT pre-tokenizer applies: the
unified ideographs with extensions A to E and the compatibility blocks. (Yijing
hexagrams, U+4DC0-4DFF, sit between extension A and the main block and are not
split; extension F and later are not either.) `tests/test_task_data.py` checks the
ranges against the tokenizer at each boundary.

Importing this module loads no TensorFlow.
"""

from __future__ import annotations

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
