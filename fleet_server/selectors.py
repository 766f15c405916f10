"""Label selectors in Kubernetes syntax, and label keys and values validated as it does.

``region=eu``, ``region==eu``, ``region!=eu``, ``model in (a,b)``, ``model notin (c)``,
``beta`` (has the label), ``!beta`` (has not); a comma means AND; an empty selector matches
every car. A selector that does not parse raises :class:`SelectorError` naming the column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_NAME = 63
MAX_PREFIX = 253
MAX_VALUE = 63
MAX_SELECTOR = 4096


class LabelError(ValueError):
    """A label key or value Kubernetes would refuse; the message says why."""


class SelectorError(ValueError):
    """A selector that does not parse; the message names the column (1 = first character)."""


def check_key(key: str) -> str:
    """A qualified name: ``[prefix/]name``, prefix a DNS subdomain, name up to 63 characters."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > MAX_PREFIX or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise LabelError(
            f"label key {key!r}: the prefix must be a DNS subdomain (lower case, "
            f"at most {MAX_PREFIX} characters)"
        )
    if not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise LabelError(
            f"label key {key!r}: the name must be 1 to {MAX_NAME} characters of letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return key


def check_value(key: str, value: str) -> str:
    if len(value) > MAX_VALUE or (value and not _NAME.fullmatch(value)):
        raise LabelError(
            f"label {key!r}: the value must be at most {MAX_VALUE} characters of letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    """``exists``, ``!``, ``=``, ``!=``, ``in`` or ``notin``"""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        # != and notin match a car without the label, as in Kubernetes.
        return value is None or value not in self.values


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_SPECIAL = set("!=(),")


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        """The next word (without taking it): an operator, a word, or '' at the end."""
        self.skip_space()
        text, pos = self.text, self.pos
        if pos >= len(text):
            return ""
        for op in ("==", "!=", "=", "!", "(", ")", ","):
            if text.startswith(op, pos):
                return op
        end = pos
        while end < len(text) and not text[end].isspace() and text[end] not in _SPECIAL:
            end += 1
        return text[pos:end]

    def take(self) -> tuple[str, int]:
        word = self.peek()
        column = self.pos + 1
        self.pos += len(word)
        return word, column

    def error(self, message: str, column: int | None = None) -> SelectorError:
        return SelectorError(f"column {column or self.pos + 1}: {message}")


def parse(text: str) -> Selector:
    """The selector of ``text``; raises SelectorError saying where it fails to parse."""
    if len(text) > MAX_SELECTOR:
        raise SelectorError(
            f"column {MAX_SELECTOR + 1}: a selector has at most {MAX_SELECTOR} characters"
        )
    lexer = _Lexer(text)
    requirements: list[Requirement] = []
    if lexer.peek() == "":
        return Selector()
    while True:
        requirements.append(_requirement(lexer))
        word, column = lexer.take()
        if word == "":
            return Selector(tuple(requirements))
        if word != ",":
            raise lexer.error(f"expected ',' or the end, found {word!r}", column)


def _key(lexer: _Lexer) -> str:
    word, column = lexer.take()
    if word == "" or word in _SPECIAL or word in ("==", "!="):
        raise lexer.error(f"expected a label key, found {word or 'the end'!r}", column)
    try:
        return check_key(word)
    except LabelError as e:
        raise lexer.error(str(e), column) from None


def _value(lexer: _Lexer, key: str) -> str:
    word = lexer.peek()
    column = lexer.pos + 1
    if word in ("", ",", ")"):
        return ""  # `a=` selects an empty value, as in Kubernetes
    if word in ("==", "!=", "=", "!", "("):
        raise lexer.error(f"expected a value, found {word!r}", column)
    lexer.take()
    try:
        return check_value(key, word)
    except LabelError as e:
        raise lexer.error(str(e), column) from None


def _requirement(lexer: _Lexer) -> Requirement:
    if lexer.peek() == "!":
        lexer.take()
        return Requirement(_key(lexer), "!")
    key = _key(lexer)
    op = lexer.peek()
    if op in ("", ","):
        return Requirement(key, "exists")
    op, column = lexer.take()
    if op in ("=", "=="):
        return Requirement(key, "=", frozenset([_value(lexer, key)]))
    if op == "!=":
        return Requirement(key, "!=", frozenset([_value(lexer, key)]))
    if op in ("in", "notin"):
        word, paren = lexer.take()
        if word != "(":
            raise lexer.error(f"expected '(' after {op}, found {word or 'the end'!r}", paren)
        values: set[str] = set()
        if lexer.peek() == ")":
            raise lexer.error(f"{op} needs at least one value", lexer.pos + 1)
        while True:
            values.add(_value(lexer, key))
            word, column = lexer.take()
            if word == ")":
                return Requirement(key, op, frozenset(values))
            if word != ",":
                raise lexer.error(f"expected ',' or ')', found {word or 'the end'!r}", column)
    raise lexer.error(f"expected =, ==, !=, in or notin after {key!r}, found {op!r}", column)
