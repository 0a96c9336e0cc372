"""Text from users, made safe to show on a terminal or in a log: control characters are shown escaped.

A buyer's name, a reason or an invoice number is whatever someone typed, and some characters in it act
on the reader's terminal instead of being read: an ANSI escape (ESC `[2J` clears the screen, `]8;;`
plants a link), other C0 and C1 controls, bidi overrides and isolates that reorder what follows
(U+202E shows `exe.txt` for `txt.exe`), and zero-width characters that make two different names look
the same. Every line chipclear writes for people (the CLI's tables and lines, every log line) shows
them escaped instead (`\\x1b`, `\\u202e`), so the reader sees exactly what was sent.

Only at that boundary: stored data stays as the user wrote it (the hash chain covers it), and JSON
output stays exact JSON (`json_text` only spells these characters as JSON escapes, which decode to
the very same string).
"""

from __future__ import annotations

import re

# C0 controls and DEL, C1 controls: always escaped as \xNN.
_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
# Bidi marks, embeddings, overrides and isolates; zero-width and invisible formatting characters;
# the line and paragraph separators some terminals and editors break lines on.
_FORMATTING = [
    0x061C,  # ARABIC LETTER MARK
    0x200B,  # ZERO WIDTH SPACE
    0x200C,  # ZERO WIDTH NON-JOINER
    0x200D,  # ZERO WIDTH JOINER
    0x200E,  # LEFT-TO-RIGHT MARK
    0x200F,  # RIGHT-TO-LEFT MARK
    0x2028,  # LINE SEPARATOR
    0x2029,  # PARAGRAPH SEPARATOR
    *range(0x202A, 0x202F),  # LRE, RLE, PDF, LRO, RLO
    0x2060,  # WORD JOINER
    *range(0x2066, 0x206A),  # LRI, RLI, FSI, PDI
    0xFEFF,  # ZERO WIDTH NO-BREAK SPACE (BOM)
]
_ESCAPES = {code: f"\\x{code:02x}" for code in _CONTROLS} | {code: f"\\u{code:04x}" for code in _FORMATTING}
# In JSON text only the characters json.dumps leaves raw need spelling out (it escapes C0 itself).
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in [0x7F, *range(0x80, 0xA0), *_FORMATTING]}
_UNSAFE = re.compile("[" + "".join(re.escape(chr(code)) for code in _ESCAPES) + "]")


_LINES = _ESCAPES | {ord("\n"): "\n"}


def shown(text: str, *, lines: bool = False) -> str:
    """`text` with every control, bidi and zero-width character escaped (`\\x1b`, `\\u202e`);
    with `lines`, new lines are kept (a whole message a program composed, not a value)."""
    return text.translate(_LINES if lines else _ESCAPES)


def is_safe(text: str) -> bool:
    """Whether `text` shows as itself (nothing in it would be escaped)."""
    return _UNSAFE.search(text) is None


def json_text(text: str) -> str:
    """JSON text (from json.dumps) with the characters above spelled as JSON escapes: the same JSON
    value to any parser, inert on a terminal. (They can only occur inside JSON strings.)"""
    return text.translate(_JSON_ESCAPES)
