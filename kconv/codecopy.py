"""Copying Python definitions into the emitted model.py, which imports only torch.

One mechanism for both kinds of copied code: kconv's runtime classes (``kconv/runtime/``, read from
their files, so that emitting needs no torch import) and the torch code of user extensions
(``kconv.extend``, read with ``inspect.getsource``). A definition is a module-level ``def`` or
``class``; what it refers to is found in its syntax tree (free names) and must be another copied
definition, a name model.py itself defines (``torch``, ``F``, ``nn``, the generated
``keras_activation``) or a builtin. Copied code may import nothing but torch.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

#: Names every emitted model.py defines (its imports).
EMITTED_GLOBALS = frozenset({"torch", "F", "nn"})
_BUILTINS = frozenset(dir(builtins))


class CopyError(Exception):
    """A definition cannot be copied into model.py (``what``: the copied object, ``why``)."""


@dataclass(frozen=True)
class Definition:
    name: str
    source: str  # dedented, without a trailing newline

    @property
    def free_names(self) -> frozenset:
        return frozenset(free_names(self.source))


def free_names(src: str) -> set:
    """Names ``src`` loads that it does not bind itself (coarse: one scope for the whole source)."""
    tree = ast.parse(src)
    assigned, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else assigned).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            assigned.add(node.name)
        elif isinstance(node, ast.arg):
            assigned.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            assigned |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            assigned.add(node.name)
    return loaded - assigned


def imports(src: str) -> set:
    """Top-level package names the code imports (anywhere in it; '.' for a relative import)."""
    out = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add((node.module or "").split(".")[0] if node.level == 0 else ".")
    return out


def of_object(obj) -> Definition:
    """The source of a module-level function or class (``inspect.getsource``)."""
    name = getattr(obj, "__name__", None)
    if name is None or not (inspect.isclass(obj) or inspect.isfunction(obj)):
        raise CopyError(f"{obj!r}: only module-level functions and classes can be copied")
    if getattr(obj, "__qualname__", name) != name or name == "<lambda>":
        raise CopyError(f"{getattr(obj, '__qualname__', name)} is not a module-level def or class: its source "
                        "cannot be copied into model.py")
    try:
        src = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as e:
        raise CopyError(f"the source of {name} cannot be read ({e})") from None
    return Definition(name, src.rstrip("\n"))


def of_module_source(text: str) -> dict:
    """{name: Definition} of the module-level defs and classes in a module's source text, each
    exactly as written there (decorators included; the module's imports are not)."""
    lines = text.splitlines()
    out = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            out[node.name] = Definition(node.name, "\n".join(lines[start - 1:node.end_lineno]))
    return out


def check_imports(defs) -> None:
    """Copied code imports nothing but torch (model.py imports only torch)."""
    for d in defs:
        other = sorted(imports(d.source) - {"torch"})
        if other:
            raise CopyError(f"{d.name} imports {', '.join(other)}: model.py may import only torch")


def closure(names, available: dict, provided=EMITTED_GLOBALS) -> list:
    """The definitions ``names`` and, transitively, the definitions in ``available`` they use, each
    after those it uses (in sorted order otherwise: the same input gives the same model.py). A free
    name that is neither available, ``provided`` nor a builtin is an error naming it."""
    out: dict = {}
    missing: set = set()

    def add(name, stack=()):
        if name in out or name in stack:
            return
        d = available[name]
        for dep in sorted(d.free_names - set(provided) - _BUILTINS):
            if dep in available:
                add(dep, (*stack, name))
            else:
                missing.add(dep)
        out[name] = d

    for n in sorted(names):
        add(n)
    if missing:
        raise CopyError(f"the copied code uses {', '.join(sorted(missing))}, which model.py would not define")
    return list(out.values())


# --- kconv's own runtime classes -------------------------------------------------------------------
RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
#: Defined by the emitter itself where a model needs it (kconv/emit/activations.py generates
#: keras_activation with only the activations the model uses, as the file's Keras version computes
#: them); kconv/runtime/activations.py holds the importable equivalent.
GENERATED = frozenset({"keras_activation"})


@lru_cache(maxsize=None)
def runtime() -> dict:
    """{name: Definition} of every def and class in kconv/runtime/*.py (read as text: no torch)."""
    out: dict = {}
    for path in sorted(RUNTIME_DIR.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for name, d in of_module_source(path.read_text(encoding="utf-8")).items():
            if name in out:
                raise CopyError(f"kconv.runtime defines {name} twice ({path.name})")
            out[name] = d
    return out


def runtime_definitions(names, generated=()) -> list:
    """The runtime definitions ``names`` and those they use, dependencies first.
    ``generated``: names the emitter defines itself in this model.py (of :data:`GENERATED`)."""
    available = {n: d for n, d in runtime().items() if n not in GENERATED}
    return closure(names, available, EMITTED_GLOBALS | set(generated))
