"""What a Lambda layer stores, described without running or unmarshalling it.

Keras 3 keeps a Python lambda as ``{"class_name": "__lambda__", "config": {"code": <base64 of
marshal.dumps(fn.__code__)>, "defaults", "closure"}}`` and a named function as a registered name
(``{"class_name": "function", "config": "f", "module": ...}``); Keras 2 as ``function`` =
``[code, defaults, closure]`` with ``function_type`` 'lambda', or a name with 'function'.

The code is never given to ``marshal.loads``: unmarshalling untrusted bytes can crash the
interpreter (and the resulting code object is one ``exec`` away from running), and the bytecode of
another Python version does not load anyway. Instead :func:`marshal_strings` scans the bytes for
the string objects marshal writes (names, attribute names, string constants, the file name): plain
byte parsing, bounded, that cannot execute anything and works for every Python version. It shows
what a reviewer needs (``os``, ``system``, ``/tmp/x``...) without a disassembly.
"""
from __future__ import annotations

import base64
import binascii
import struct

MAX_STRINGS = 64
MAX_STRING_CHARS = 120

_SHORT = {ord("z"), ord("Z")}  # short ascii (interned): 1-byte length
_LONG_TEXT = {ord("a"), ord("A"), ord("u"), ord("t")}  # ascii / unicode / interned: 4-byte length
_BYTES = ord("s")  # bytes (co_code, line tables): 4-byte length, skipped


def _printable(text: str) -> bool:
    return bool(text) and all(c.isprintable() for c in text)


def marshal_strings(raw: bytes, limit: int = 1 << 20) -> list[str]:
    """Text objects in marshal data, in order of appearance, deduplicated (a heuristic scan)."""
    raw = raw[:limit]
    out: list[str] = []
    seen = set()
    i, n = 0, len(raw)
    while i < n and len(out) < MAX_STRINGS:
        t = raw[i] & 0x7F
        if t in _SHORT and i + 1 < n:
            length = raw[i + 1]
            start = i + 2
        elif (t in _LONG_TEXT or t == _BYTES) and i + 5 <= n:
            length = struct.unpack_from("<I", raw, i + 1)[0]
            start = i + 5
        else:
            i += 1
            continue
        end = start + length
        if end > n:
            i += 1
            continue
        if t == _BYTES:
            i = end if length else i + 1
            continue
        try:
            text = raw[start:end].decode("utf8")
        except UnicodeDecodeError:
            i += 1
            continue
        if length and _printable(text):
            text = text[:MAX_STRING_CHARS]
            if text not in seen:
                seen.add(text)
                out.append(text)
            i = end
        else:
            i += 1
    return out


def _short_repr(v, n: int = 120) -> str:
    text = repr(v)
    return text if len(text) <= n else text[:n] + "..."


def _code_info(code, limit: int) -> dict:
    info: dict = {"kind": "bytecode"}
    if not isinstance(code, str):
        info["problem"] = f"code is {type(code).__name__}, not base64 text"
        return info
    if len(code) > limit * 4 // 3 + 16:
        info["problem"] = f"code is {len(code)} characters, over the summary limit (KCONV_MAX_LAMBDA_CODE_BYTES)"
        return info
    try:
        raw = base64.b64decode(code.encode("ascii"), validate=False)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        info["problem"] = "code is not valid base64"
        return info
    info["code_bytes"] = len(raw)
    import hashlib  # here: OpenSSL loads in 4 ms, and most files hold no Lambda bytecode

    info["sha256"] = hashlib.sha256(raw).hexdigest()
    info["strings"] = marshal_strings(raw, limit)
    return info


def describe(cfg: dict, limit: int = 1 << 20) -> dict:
    """A JSON-able description of a Lambda layer's stored function (nothing is run or unmarshalled)."""
    fn = cfg.get("function")
    info: dict
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
        inner = fn.get("config") if isinstance(fn.get("config"), dict) else {}
        info = _code_info(inner.get("code"), limit)
        extra = {"defaults": inner.get("defaults"), "closure": inner.get("closure")}
    elif isinstance(fn, dict):
        name = fn.get("config") if isinstance(fn.get("config"), str) else fn.get("registered_name")
        info = {"kind": "named function", "name": str(name)[:MAX_STRING_CHARS],
                "module": str(fn.get("module") or "")[:MAX_STRING_CHARS],
                "note": "only the name is stored; Keras needs the function itself (custom_objects) to load it"}
        extra = {}
    elif isinstance(fn, (list, tuple)) and fn and cfg.get("function_type", "lambda") == "lambda":
        info = _code_info(fn[0], limit)
        extra = {"defaults": fn[1] if len(fn) > 1 else None, "closure": fn[2] if len(fn) > 2 else None}
    elif isinstance(fn, str):
        if cfg.get("function_type") == "lambda":
            info = _code_info(fn, limit)
        else:
            info = {"kind": "named function", "name": fn[:MAX_STRING_CHARS],
                    "module": str(cfg.get("module") or "")[:MAX_STRING_CHARS],
                    "note": "only the name is stored; Keras needs the function itself (custom_objects) to load it"}
        extra = {}
    else:
        info = {"kind": "unknown", "problem": f"function field is {type(fn).__name__}"}
        extra = {}
    for k, v in extra.items():
        if v is not None:
            info[k] = _short_repr(v)
    if cfg.get("arguments"):
        info["arguments"] = _short_repr(cfg["arguments"])
    out_shape = cfg.get("output_shape")
    if isinstance(out_shape, dict) and out_shape.get("class_name") == "__lambda__":
        info["output_shape"] = _code_info((out_shape.get("config") or {}).get("code"), limit)
    elif cfg.get("output_shape_type") == "lambda" and isinstance(out_shape, (list, tuple)) and out_shape:
        info["output_shape"] = _code_info(out_shape[0], limit)
    info["executed"] = False
    return info
