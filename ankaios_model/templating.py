"""Handlebars rendering as the Ankaios server configures handlebars-rust.

Shared by the emulator (which renders like the server) and the connector (which must know
what a workload will look like once rendered, e.g. to check the image it will run).

Ankaios (``server/src/ankaios_server/config_renderer.rs``) uses handlebars-rust 6 in strict
mode, with HTML escaping switched off and one partial ``indent`` registered as
``{{content}}``. pybars3 follows Handlebars.js instead: it has no strict mode and
different error text, and workload ids depend on byte-exact output, so this module is a
small implementation of the subset Ankaios manifests use, following handlebars-rust's
whitespace rules (standalone lines, ``~``) and error messages. What is not covered is
listed in ``docs/emulator-semantics.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RenderError", "render"]

_UNNAMED = "Unnamed template"


class RenderError(Exception):
    """A render failure; ``str()`` mimics handlebars-rust's ``RenderError`` display."""


class _Failure(Exception):
    """Reason without position; positioned by the innermost element that raised it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _debug_opt(value: str | None) -> str:
    if value is None:
        return "None"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'Some("{escaped}")'


def _strict(path: str | None) -> _Failure:
    return _Failure(f"Failed to access variable in strict mode {_debug_opt(path)}")


# ---------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Expr:
    path: str
    line: int
    col: int


@dataclass
class _Block:
    name: str
    params: list[str]
    line: int
    col: int
    body: list[Any] = field(default_factory=list)
    inverse: list[Any] | None = None


@dataclass
class _Partial:
    name: str
    hash: dict[str, str]
    indent: str | None
    standalone: bool
    line: int
    col: int


@dataclass
class _Tag:
    kind: str  # expr, open, close, else, comment, partial
    body: str
    start: int
    end: int
    strip_before: bool
    strip_after: bool


_WS = " \t"


def _line_col(source: str, pos: int) -> tuple[int, int]:
    line = source.count("\n", 0, pos) + 1
    col = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return line, col


def _tokenize(source: str) -> list[str | _Tag]:
    tokens: list[str | _Tag] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            tokens.append(source[pos:])
            return tokens
        tokens.append(source[pos:start])
        i = start + 2
        strip_before = source.startswith("~", i)
        if strip_before:
            i += 1
        if source.startswith("!--", i):
            close = source.find("--", i + 3)
            end = source.find("}}", close + 2) if close >= 0 else -1
            if close < 0 or end < 0:
                raise _Failure("Failed to parse template: unclosed comment")
            kind, body = "comment", ""
            strip_after = source[close + 2 : end].strip() == "~"
            end += 2
        elif source.startswith("!", i):
            end = source.find("}}", i)
            if end < 0:
                raise _Failure("Failed to parse template: unclosed comment")
            kind, body = "comment", ""
            strip_after = source[end - 1] == "~"
            end += 2
        else:
            triple = source.startswith("{", i)
            if triple:
                i += 1
            closer = "}}}" if triple else "}}"
            end = source.find(closer, i)
            if end < 0:
                line, col = _line_col(source, start)
                raise _Failure(
                    f"Failed to parse template: unclosed expression at line {line}, col {col}"
                )
            inner = source[i:end]
            strip_after = inner.endswith("~")
            if strip_after:
                inner = inner[:-1]
            inner = inner.strip()
            end += len(closer)
            if triple:
                kind, body = "expr", inner
            elif inner.startswith("#"):
                kind, body = "open", inner[1:].strip()
            elif inner.startswith("/"):
                kind, body = "close", inner[1:].strip()
            elif inner in {"else", "^"}:
                kind, body = "else", ""
            elif inner.startswith(">"):
                kind, body = "partial", inner[1:].strip()
            else:
                kind, body = "expr", inner
        tokens.append(_Tag(kind, body, start, end, strip_before, strip_after))
        pos = end


def _split_args(body: str) -> list[str]:
    return re.findall(r'"[^"]*"|\'[^\']*\'|\S+', body)


def _parse(source: str) -> list[Any]:
    tokens = _tokenize(source)
    texts: list[str] = [t if isinstance(t, str) else "" for t in tokens]
    standalone: dict[int, bool] = {}
    # Standalone detection on the original source, as handlebars-rust does.
    for idx, tok in enumerate(tokens):
        if not isinstance(tok, _Tag):
            continue
        if tok.strip_before and idx > 0:
            texts[idx - 1] = texts[idx - 1].rstrip()
        if tok.strip_after and idx + 1 < len(tokens):
            texts[idx + 1] = texts[idx + 1].lstrip()
        if tok.kind == "expr":
            continue
        after = source[tok.end :]
        trailing = after.lstrip(_WS).startswith(("\n", "\r")) or after == ""
        before = source[: tok.start].rstrip(_WS)
        leading = before == "" or before.endswith(("\n", "\r"))
        is_standalone = trailing and leading
        standalone[idx] = is_standalone
        if is_standalone:
            if not tok.strip_before:
                texts[idx - 1] = texts[idx - 1].rstrip(_WS)
            if idx + 1 < len(tokens):
                nxt = texts[idx + 1].lstrip(_WS)
                if nxt.startswith("\r\n"):
                    nxt = nxt[2:]
                elif nxt.startswith("\n"):
                    nxt = nxt[1:]
                texts[idx + 1] = nxt

    root: list[Any] = []
    stack: list[tuple[_Block, list[Any]]] = []
    current = root
    for idx, tok in enumerate(tokens):
        if isinstance(tok, str):
            if texts[idx]:
                current.append(_Text(texts[idx]))
            continue
        line, col = _line_col(source, tok.start)
        if tok.kind == "comment":
            continue
        if tok.kind == "expr":
            current.append(_Expr(tok.body, line, col))
        elif tok.kind == "open":
            args = _split_args(tok.body)
            if not args:
                raise _Failure("Failed to parse template: empty block")
            block = _Block(args[0], args[1:], line, col)
            current.append(block)
            stack.append((block, current))
            current = block.body
        elif tok.kind == "else":
            if not stack:
                raise _Failure("Failed to parse template: else outside of a block")
            block = stack[-1][0]
            block.inverse = []
            current = block.inverse
        elif tok.kind == "close":
            if not stack:
                raise _Failure(f"Failed to parse template: unexpected closing {tok.body}")
            block, parent = stack.pop()
            if block.name != tok.body:
                raise _Failure(
                    f"Failed to parse template: helper {block.name!r} was opened, "
                    f"but {tok.body!r} is closing"
                )
            current = parent
        else:  # partial
            args = _split_args(tok.body)
            if not args:
                raise _Failure("Failed to parse template: empty partial")
            hash_args: dict[str, str] = {}
            for arg in args[1:]:
                if "=" in arg:
                    key, _, value = arg.partition("=")
                    hash_args[key] = value
            before = source[: tok.start]
            trimmed = before.rstrip(_WS)
            indent = before[len(trimmed) :] or None
            if tok.strip_before:
                indent = None
            current.append(
                _Partial(args[0], hash_args, indent, standalone.get(idx, False), line, col)
            )
    if stack:
        raise _Failure(f"Failed to parse template: unclosed helper {stack[-1][0].name!r}")
    return root


# ---------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------


_MISSING = object()


@dataclass
class _Frame:
    value: Any
    locals: dict[str, Any] = field(default_factory=dict)


def _literal(token: str) -> Any:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    keywords: dict[str, Any] = {"true": True, "false": False, "null": None}
    if token in keywords:
        return keywords[token]
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    return _MISSING


def _resolve(path: str, frames: list[_Frame]) -> Any:
    literal = _literal(path)
    if literal is not _MISSING:
        return literal
    depth = len(frames) - 1
    rest = path
    while rest.startswith("../"):
        depth = max(depth - 1, 0)
        rest = rest[3:]
    frame = frames[depth]
    if rest.startswith("@"):
        head, _, tail = rest[1:].partition(".")
        value = frames[0].value if head == "root" else frame.locals.get(head, _MISSING)
        rest = tail
        if value is _MISSING:
            return _MISSING
    else:
        value = frame.value
    if rest in ("", "this", "."):
        return value
    if rest.startswith("this.") or rest.startswith("this/"):
        rest = rest[5:]
    for raw in re.split(r"[./]", rest):
        part = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(_to_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "[object]"
    return str(value)


def _truthy(value: Any) -> bool:
    if value is _MISSING or value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return bool(value)


class _Renderer:
    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, exc: _Failure, line: int, col: int) -> RenderError:
        return RenderError(f'Error rendering "{self.name}" line {line}, col {col}: {exc.reason}')

    def nodes(self, nodes: list[Any], frames: list[_Frame], out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Expr):
                try:
                    value = _resolve(node.path, frames)
                    if value is _MISSING:
                        raise _strict(node.path)
                except _Failure as exc:
                    raise self.fail(exc, node.line, node.col) from None
                out.append(_to_text(value))
            elif isinstance(node, _Block):
                try:
                    self.block(node, frames, out)
                except _Failure as exc:
                    raise self.fail(exc, node.line, node.col) from None
            elif isinstance(node, _Partial):
                try:
                    self.partial(node, frames, out)
                except _Failure as exc:
                    raise self.fail(exc, node.line, node.col) from None

    def block(self, node: _Block, frames: list[_Frame], out: list[str]) -> None:
        if node.name not in ("each", "if", "unless", "with"):
            raise _Failure(f"Helper not found {node.name}")
        if not node.params:
            raise _Failure(f"Helper/Decorator {node.name} param at index 0 required but not found")
        param = node.params[0]
        value = _resolve(param, frames)
        if node.name in ("if", "unless"):
            chosen = _truthy(value) if node.name == "if" else not _truthy(value)
            branch = node.body if chosen else node.inverse
            if branch:
                self.nodes(branch, frames, out)
            return
        if node.name == "with":
            if _truthy(value):
                self.nodes(node.body, [*frames, _Frame(value)], out)
            elif node.inverse is not None:
                self.nodes(node.inverse, frames, out)
            else:
                raise _strict(param)
            return
        # each
        if isinstance(value, list) and (value or node.inverse is None):
            for i, item in enumerate(value):
                loc = {"index": i, "first": i == 0, "last": i == len(value) - 1}
                self.nodes(node.body, [*frames, _Frame(item, loc)], out)
        elif isinstance(value, Mapping) and (value or node.inverse is None):
            items = list(value.items())
            for i, (key, item) in enumerate(items):
                loc = {"index": i, "key": key, "first": i == 0, "last": i == len(items) - 1}
                self.nodes(node.body, [*frames, _Frame(item, loc)], out)
        elif node.inverse is not None:
            self.nodes(node.inverse, frames, out)
        else:
            raise _strict(param)

    def partial(self, node: _Partial, frames: list[_Frame], out: list[str]) -> None:
        if node.name != "indent":
            raise _Failure(f"Partial not found {node.name}")
        scope = frames[-1].value
        ctx: dict[str, Any] = dict(scope) if isinstance(scope, Mapping) else {}
        for key, expr in node.hash.items():
            value = _resolve(expr, frames)
            if value is not _MISSING:
                ctx[key] = value
            else:
                ctx.pop(key, None)
        inner = _Renderer("indent")
        buf: list[str] = []
        inner.nodes(_INDENT_PARTIAL, [_Frame(ctx)], buf)
        text = "".join(buf)
        if not node.indent or not text:
            out.append(text)
            return
        # handlebars-rust writes the indent before the partial's first output (standalone
        # only) and after every newline that is followed by more output, blank lines included.
        lines = text.split("\n")
        rebuilt = lines[0]
        for i, line in enumerate(lines[1:], start=1):
            is_last = i == len(lines) - 1
            rebuilt += "\n" + ("" if is_last and line == "" else node.indent + line)
        if node.standalone:
            rebuilt = node.indent + rebuilt
        out.append(rebuilt)


_INDENT_PARTIAL: list[Any] = [_Expr("content", 1, 1)]


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render ``template`` against ``context`` (alias -> config value), strictly."""
    try:
        nodes = _parse(template)
    except _Failure as exc:
        raise RenderError(exc.reason) from None
    out: list[str] = []
    _Renderer(_UNNAMED).nodes(nodes, [_Frame(dict(context))], out)
    return "".join(out)
