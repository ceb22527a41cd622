"""Text for the terminal: file names and rule text may hold control characters, and a
raw ESC, CR or bidi override in an error line could rewrite what the user sees."""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Characters that reorder or hide text without being control characters (Cc).
_INVISIBLE_FORMAT = frozenset("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e"
                              "\u2066\u2067\u2068\u2069\ufeff")


def safe(text: object) -> str:
    """`text` with every control, line-breaking and bidi character written as an escape
    (`\\x1b`, `\\n`, `\\u202e`); a byte that was not UTF-8 in a file name (a lone surrogate
    from `surrogateescape`) appears as the byte, `\\xff`. Everything else is unchanged."""
    out = []
    for char in str(text):
        code = ord(char)
        if char in _NAMED:
            out.append(_NAMED[char])
        elif 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x100 and unicodedata.category(char) == "Cc":
            out.append(f"\\x{code:02x}")
        elif char in _INVISIBLE_FORMAT or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def safe_lines(text: str) -> str:
    """`safe` for each line of a multi-line text, keeping its line feeds."""
    return "\n".join(safe(line) for line in text.split("\n"))
