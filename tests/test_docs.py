"""The docs cannot drift from the code (issue 10).

* Every fenced block in README.md and docs/*.md whose first line starts with ``$ `` is a terminal
  session: each command runs (in document order, in one scratch directory per file where ``fixtures/``
  is the repository's) and its output (stdout and stderr, as a terminal shows them) must equal the
  lines shown. A line ``...`` stands for any number of lines; numbers in scientific notation (measured
  errors, which vary in the last bits between CPUs) match any such number.
* A fenced block preceded by ``<!-- output of: COMMAND -->`` must equal COMMAND's output (used for
  files such as the emitted model.py). ``KCONV_REGENERATE_DOCS=1 python -m pytest tests/test_docs.py``
  rewrites these blocks from the real output (then review the diff); sessions are never rewritten.
* Every ``kconv SUBCOMMAND --option`` written anywhere in the docs exists, and every option of every
  subcommand is documented in README.md.
* Every ``kconv.a.b`` Python name in the docs resolves.
"""
from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from kconv.cli import main
from kconv.extend import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCI = re.compile(r"-?\d+(\.\d+)?e[+-]\d+")


def blocks(path: Path):
    """(line number, marker command or None, lines) of every fenced block."""
    lines = path.read_text().splitlines()
    i, out = 0, []
    while i < len(lines):
        if lines[i].startswith("```"):
            marker = None
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            m = re.match(r"<!-- output of: (.*) -->$", lines[j].strip()) if j >= 0 else None
            if m:
                marker = m.group(1)
            k = i + 1
            while k < len(lines) and not lines[k].startswith("```"):
                k += 1
            out.append((i + 1, marker, lines[i + 1:k]))
            i = k + 1
        else:
            i += 1
    return out


def sessions(path: Path):
    """[(line, [(command, expected lines)])] for the terminal sessions and output-of blocks of a file."""
    found = []
    for line, marker, body in blocks(path):
        if marker:
            found.append((line, [(marker, body)]))
        elif body and body[0].startswith("$ "):
            steps = []
            for text in body:
                if text.startswith("$ "):
                    steps.append((text[2:], []))
                else:
                    steps[-1][1].append(text)
            found.append((line, steps))
    return found


def _line(expected: str, actual: str) -> bool:
    """Equal, except that '...' inside a documented line stands for any text (a long message cut short)."""
    if "..." not in expected:
        return expected == actual
    return re.fullmatch(".*".join(re.escape(part) for part in expected.split("...")), actual) is not None


def _match(expected: list[str], actual: list[str]) -> bool:
    norm = [SCI.sub("<num>", x.rstrip()) for x in actual]
    exp = [SCI.sub("<num>", x.rstrip()) for x in expected]

    def go(i, j):
        if i == len(exp):
            return j == len(norm)
        if exp[i] == "...":
            return any(go(i + 1, k) for k in range(j, len(norm) + 1))
        return j < len(norm) and _line(exp[i], norm[j]) and go(i + 1, j + 1)

    return go(0, 0)


def _scratch(tmp_path: Path) -> Path:
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _run(cmd: str, cwd: Path, last_rc: int) -> tuple[int, list[str]]:
    env = dict(os.environ, COLUMNS="120", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = f'kconv() {{ "{sys.executable}" -m kconv "$@"; }}\n(exit {last_rc})\n{cmd}\n'
    p = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    return p.returncode, p.stdout.splitlines()


CASES = [(p, line, steps) for p in DOCS for line, steps in sessions(p)]


def test_docs_have_sessions():
    assert len([c for c in CASES if c[0].name == "README.md"]) >= 5  # the parser finds the README's examples


@pytest.mark.keras
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_sessions_print_what_the_docs_show(doc, tmp_path):
    cwd = _scratch(tmp_path)
    rc = 0
    failures = []
    regenerate = os.environ.get("KCONV_REGENERATE_DOCS") == "1"
    rewritten = {}
    for _, line, steps in [c for c in CASES if c[0] == doc]:
        for cmd, expected in steps:
            rc, actual = _run(cmd, cwd, rc)
            if regenerate and (line, cmd) in _marked(doc):
                rewritten[line] = actual
                continue
            if not _match(expected, actual):
                failures.append(f"{doc.name}:{line}: $ {cmd}\n--- documented\n" + "\n".join(expected)
                                + "\n--- actual\n" + "\n".join(actual))
    if rewritten:
        lines = doc.read_text().splitlines()
        for line in sorted(rewritten, reverse=True):  # ``line`` is the opening fence (1-based)
            end = line
            while not lines[end].startswith("```"):
                end += 1
            lines[line:end] = rewritten[line]
        doc.write_text("\n".join(lines) + "\n")
    assert not failures, "\n\n".join(failures)


def _marked(doc: Path) -> set:
    return {(line, marker) for line, marker, _ in blocks(doc) if marker}


def _commands():
    return {name: cmd for name, cmd in main.commands.items()}


def _options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}


def _doc_command_lines():
    """Every `kconv SUB ...` invocation written in the docs (code blocks and inline code)."""
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"(?:^\$ |^|`)kconv ([a-z]+)([^`\n|]*)", text, re.M):
            yield doc.name, m.group(1), m.group(2)


def test_documented_options_exist():
    cmds = _commands()
    bad = []
    for doc, sub, rest in _doc_command_lines():
        if sub not in cmds:
            if sub not in ("inspect", "convert", "verify", "layers") and not rest.strip().startswith("-"):
                continue  # prose such as "kconv reads ..."
            bad.append(f"{doc}: kconv {sub}: no such command")
            continue
        for tok in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest):
            if tok not in _options(cmds[sub]) | {"-h", "--help"}:
                bad.append(f"{doc}: kconv {sub} {tok}: no such option")
    assert not bad, "\n".join(sorted(set(bad)))


def _mentioned(opt: str, text: str) -> bool:
    return re.search(rf"`[^`\n]*(?<![\w-]){re.escape(opt)}(?![\w-])[^`\n]*`", text) is not None


def test_every_option_is_documented():
    readme = (ROOT / "README.md").read_text()
    missing = []
    for name, cmd in _commands().items():
        for opt in _options(cmd):
            if opt.startswith("--") and opt not in ("--help",) and not _mentioned(opt, readme):
                missing.append(f"kconv {name} {opt}")
    for opt in _options(main):
        if opt.startswith("--") and opt != "--help" and not _mentioned(opt, readme):
            missing.append(f"kconv {opt}")
    assert not missing, "undocumented in README.md: " + ", ".join(sorted(missing))


def test_python_names_in_docs_resolve():
    bad = []
    for doc in DOCS:
        for name in sorted(set(re.findall(r"\bkconv(?:\.[A-Za-z_]\w*)+", doc.read_text()))):
            parts = name.split(".")
            if name == ENTRY_POINT_GROUP:
                continue  # the entry-point group extensions are installed under, not a Python name
            if parts[-1] in ("json", "py", "h5", "keras", "npz", "safetensors"):
                continue  # a file name (kconv.json), not a Python name
            obj = importlib.import_module("kconv")
            for i, part in enumerate(parts[1:], 1):
                if hasattr(obj, part):
                    obj = getattr(obj, part)
                    continue
                try:
                    obj = importlib.import_module(".".join(parts[: i + 1]))
                except ImportError:
                    if (ROOT / "/".join(parts[: i + 1])).with_suffix(".py").exists() or \
                            (ROOT / "/".join(parts[: i + 1])).is_dir():
                        break  # a path written with dots, e.g. kconv.json is a file name
                    bad.append(f"{doc.name}: {name}")
                    break
    assert not bad, "names that do not exist: " + ", ".join(bad)


def test_install_hints_name_what_exists():
    """Error messages and docs must not point to a package the index does not have."""
    for p in [*DOCS, *ROOT.joinpath("kconv").rglob("*.py")]:
        text = p.read_text()
        assert "pip install 'kconv[" not in text and 'pip install "kconv[' not in text, p


def test_readme_first_lines_are_the_two_commands():
    head = (ROOT / "README.md").read_text().split("```")[1].strip().splitlines()
    assert len(head) == 2 and head[1].startswith("pip install") and "pytest" in head[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert head[1].strip() in ci  # CI runs exactly the README's test command
