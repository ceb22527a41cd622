"""A small SPL tokenizer written from Splunk's quoting rules, independent of the backend.

Inside double quotes only `\\` and `\"` are escapes; every other character,
including `|`, `=`, newlines and a backslash before anything else, is literal.
Used by the tests to prove a value stays inside its quotes and reads back intact.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    kind: str  # "string", "word", "op", "lparen", "rparen", "pipe", "comma"
    text: str  # for strings: the unescaped value


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(query):
        char = query[i]
        if char in " \t\r\n":
            i += 1
        elif char == '"':
            value, i = _string(query, i + 1)
            tokens.append(Token("string", value))
        elif char in "()|,":
            tokens.append(Token({"(": "lparen", ")": "rparen", "|": "pipe", ",": "comma"}[char], char))
            i += 1
        elif char in "=<>!":
            end = i + 1
            while end < len(query) and query[end] in "=<>":
                end += 1
            tokens.append(Token("op", query[i:end]))
            i = end
        else:
            end = i
            while end < len(query) and query[end] not in ' \t\r\n"()|,=<>!':
                end += 1
            tokens.append(Token("word", query[i:end]))
            i = end
    return tokens


def _string(query: str, i: int) -> tuple[str, int]:
    out = []
    while i < len(query):
        char = query[i]
        if char == "\\" and i + 1 < len(query) and query[i + 1] in '\\"':
            out.append(query[i + 1])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise ValueError("unterminated string")
