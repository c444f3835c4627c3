"""Lay out emitted statements as ``ruff format`` would (line length 100), without depending on it.

The emitter writes each statement on one line; a statement that does not fit is split at its last
bracket pair: first the bracket's content on one indented line, else one item per line with a
trailing comma, each item split the same way. That is the layout ruff (and black) give to the calls,
lists and tuples kconv emits; ``tests/test_golden.py`` runs ruff on the emitted files to keep it so.
"""
from __future__ import annotations

WIDTH = 100
_OPEN, _CLOSE = "([{", ")]}"


def _scan(s: str):
    """Yield (index, char, depth before the char) outside string literals."""
    depth, quote, i = 0, None, 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in _OPEN:
            yield i, c, depth
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            yield i, c, depth
        else:
            yield i, c, depth
        i += 1


def _matching_open(s: str, close: int) -> int | None:
    """Index of the bracket that the bracket at ``close`` closes."""
    stack = []
    for i, c, _ in _scan(s):
        if c in _OPEN:
            stack.append(i)
        elif c in _CLOSE:
            o = stack.pop() if stack else None
            if i == close:
                return o
    return None


def _items(body: str) -> list[str]:
    """``body`` split at its top-level commas (a trailing comma gives no empty item)."""
    out, start = [], 0
    for i, c, d in _scan(body):
        if c == "," and d == 0:
            out.append(body[start:i].strip())
            start = i + 1
    last = body[start:].strip()
    if last:
        out.append(last)
    return out


def _is_call(head: str) -> bool:
    """Whether the ``(`` ending ``head`` opens a call's arguments (not a tuple or a grouping)."""
    before = head[:-1].rstrip()
    return bool(before) and (before[-1].isalnum() or before[-1] in "_)]") and head[-2:-1] != " "


def wrap(stmt: str, indent: str, suffix: str = "") -> list[str]:
    """The lines of ``indent + stmt + suffix``, split as ruff format splits them when too long: at
    the last top-level bracket pair whose opening line fits (the trailers after it go on the closing
    line)."""
    if len(indent) + len(stmt) + len(suffix) <= WIDTH:
        return [indent + stmt + suffix]
    if stmt.endswith(":") and not suffix:
        return wrap(stmt[:-1], indent, ":")
    lead = len(stmt) - len(stmt.lstrip(_CLOSE))  # a tail ') / f(x)' continues an earlier split
    rest = stmt[lead:]
    closes = [i for i, c, d in _scan(rest) if c in _CLOSE and d == 0]
    for close in reversed(closes):
        o = _matching_open(rest, close)
        if o is None:
            break
        o, close = o + lead, close + lead
        head, body, tail = stmt[: o + 1], stmt[o + 1 : close], stmt[close:]
        if len(indent) + len(head) > WIDTH:
            continue
        tail_lines = wrap(tail, indent, suffix)  # ') / other(...)': split the same way
        inner = indent + "    "
        items = _items(body)
        if len(inner) + len(body.strip()) <= WIDTH and not body.rstrip().endswith(","):
            return [indent + head, inner + body.strip(), *tail_lines]
        lines = [indent + head]
        if close == ")" and len(items) == 1 and not body.rstrip().endswith(",") and not _is_call(head):
            return lines + wrap(items[0], inner) + tail_lines  # parentheses that group
        for item in items:
            lines += wrap(item, inner, ",")
        return lines + tail_lines
    return [indent + stmt + suffix]


def requote(line: str) -> str:
    """Single-quoted string literals in ``line`` written with double quotes, as ruff format writes
    them (those holding a double quote or a backslash are left alone)."""
    out, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c == "#":
            out.append(line[i:])
            break
        if c in "'\"":
            j = i + 1
            while j < n and line[j] != c:
                j += 2 if line[j] == "\\" else 1
            lit = line[i : j + 1]
            body = lit[1:-1]
            if c == "'" and '"' not in body and "\\" not in body:
                lit = '"' + body + '"'
            out.append(lit)
            i = j + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)
