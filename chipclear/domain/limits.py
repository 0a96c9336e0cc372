"""How much of anything chipclear takes from a user, in one place; and how a value is quoted back.

The models (which the workflow validates too) and the input gate (which reads files) share these, so
a file and a workflow input are bounded alike.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# A request names a handful of parties and at most a thousand procurement records: 256 KiB is ample.
MAX_REQUEST_BYTES = 256 * KIB
# Evidence: up to MAX_RECORDS records a file (more go in further files, one `evidence` each).
MAX_EVIDENCE_BYTES = 1 * MIB
MAX_RECORDS = 1_000
MAX_POLICY_BYTES = 256 * KIB
# An order book (`chipclear submit orders.csv`): one request a row. Ten thousand rows is a large
# procurement export (the 2 million units of the news fit in a few hundred); a cell holds at most the
# longest field a request has (end_use), so no row hides a megabyte.
MAX_ORDER_BOOK_BYTES = 8 * MIB
MAX_ORDER_ROWS = 10_000
MAX_ORDER_CELL = 2_000
# Requests one `chipclear submit` takes, across every file, directory and order book named.
MAX_BULK_REQUESTS = 100_000
# The US Consolidated Screening List is about 15 MB today.
MAX_SCREENING_LIST_BYTES = 64 * MIB
# Deeper than any document chipclear reads (a request is 4 levels deep), shallow enough for any parser.
MAX_DEPTH = 32
# A text value, wherever it sits; a field may declare a smaller limit (names: 200 characters).
MAX_TEXT = 4 * KIB
# A mapping or list with more entries than this is no document a person wrote for chipclear.
MAX_ENTRIES = 10_000
# An error message is one sentence a person reads: never longer than this.
MAX_MESSAGE = 300


def cut(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters: a 50 MB value must never be echoed back whole."""
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # repr of the head only: never build the whole repr of 50 MB
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def cut_text(text: str, limit: int = 120) -> str:
    """`text` as it is (a path, a name), cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


LONG_WORD = 48


def one_sentence(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message` on one line (runs of white space made one space) of at most `limit` characters.

    When it is too long but would fit with its long words (a deep path, a pasted value) shortened in
    the middle, they are, so the advice at the end of a message survives; otherwise the end is cut,
    and the message keeps its beginning (what failed, and where) whole."""
    if len(message) > 8 * limit:  # a 50 MB message: its head and its tail are what can be shown
        message = f"{message[: 4 * limit]} … {message[-4 * limit :]}"
    words = message.split()
    text = " ".join(words)
    if len(text) <= limit:
        return text
    shortened = " ".join(_middle_out(word) for word in words)
    return shortened if len(shortened) <= limit else text[: limit - 1] + "…"


def _middle_out(word: str) -> str:
    return word if len(word) <= LONG_WORD else f"{word[:20]}…{word[-(LONG_WORD - 21) :]}"


# A lab report kept by its content (a PDF with photographs of the boards): read whole, so bounded.
MAX_LAB_REPORT_BYTES = 64 * MIB
