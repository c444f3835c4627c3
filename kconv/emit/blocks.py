"""``--blocks``: layers that share a Keras name prefix (``conv2_block1_*``, ``block_3_*``, ``stage2_*``,
``block1a_*``) become one submodule, and structurally identical blocks one class used N times (as
torchvision's ResNet uses ``Bottleneck``).

Built on the flat code the generator already emitted: every layer call's constructor and forward
statements (``ClassSource.units``) are moved, renamed, into a block class; nothing is derived from Keras
again, so a block computes exactly what the flat statements computed. Two blocks share a class when
their rendered classes are equal text (same layer classes, configs, shapes and wiring). A group stays
flat when its statements cannot be made contiguous in ``forward`` without changing what any statement
reads, when one of its layers is called more than once (shared), or when a name would clash.

State-dict keys follow the nesting (``conv2_block1.conv1.weight``); :func:`torch_key` maps a flat key
to it (the manifest and the weights are written through it).
"""
from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field

from ..naming import RESERVED, identifier

# A name token that opens a block: block1, block1a, block17, stage2, XBlock (RegNet), with the number
# attached or as the next token (block_3, stage_0)
_ATTACHED = re.compile(r"(?i)^[a-z]*(?:block|stage)\d+[a-z]?$")
_DETACHED = re.compile(r"(?i)^[a-z]*(?:block|stage)$")
_DIGITS = re.compile(r"^\d+$")
_SELF_ATTR = re.compile(r"\bself\.([A-Za-z_]\w*)")
_DEFINES = re.compile(r"^self\.([A-Za-z_]\w*) = |register_buffer\((['\"])([A-Za-z_]\w*)\2")
_BUILTINS = frozenset(dir(builtins))


def prefixes(name: str) -> list[str]:
    """The block prefixes ``name`` could belong to, most specific first: 'conv2_block1_1_conv' ->
    ['conv2_block1', 'conv2_block1_1']; a numeric token after the block keyword ('block17_8_mixed'
    -> 'block17_8') is a fallback when the shorter group cannot be formed; the deepest keyword comes
    first ('..._stage_0_block_0_gelu' -> block before stage). Something must follow the prefix."""
    tokens = name.split("_")
    ends: list[list[int]] = []
    for i, t in enumerate(tokens):
        if _ATTACHED.match(t):
            end = i
        elif _DETACHED.match(t) and i + 1 < len(tokens) and _DIGITS.match(tokens[i + 1]):
            end = i + 1
        else:
            continue
        run = [end]
        while run[-1] + 1 < len(tokens) - 1 and _DIGITS.match(tokens[run[-1] + 1]):
            run.append(run[-1] + 1)
        ends.append([e for e in run if e < len(tokens) - 1])
    out: list[str] = []
    for run in reversed(ends):
        for e in run:
            p = "_".join(tokens[: e + 1])
            if p not in out:
                out.append(p)
    return out


@dataclass
class _Unit:
    """One layer call's statements in the flat class, and what they read and write."""
    layer: object
    init: list[str]
    forward: list[str]
    writes: list[str] = field(default_factory=list)  # forward variables assigned, in order
    reads: list[str] = field(default_factory=list)  # names read, in order of first appearance
    defines: set = field(default_factory=set)  # attributes of self it creates (modules, buffers)
    uses: set = field(default_factory=set)  # attributes of self it reads


@dataclass
class _Group:
    prefix: str
    attr: str
    units: list  # indices into the class's units, in forward order
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    source: object = None  # the block's ClassSource


class _Abort(Exception):
    pass


def group_blocks(gen) -> None:
    """Rewrite every class of ``gen`` (after ``_class``) with its block groups as submodules; fills
    ``gen.key_map`` ({(class prefix, flat attribute): 'group.attribute'}) and remaps ``gen.defaults``."""
    from .codegen import ClassSource

    gen.key_map = getattr(gen, "key_map", {})
    block_classes: list = []
    rendered: dict[str, str] = {}  # block class text (name left out) -> class name, over all classes
    for cls in list(gen.classes):
        try:
            groups, units = _plan(cls, gen)
            if groups:
                _build(cls, groups, units, gen, block_classes, rendered, ClassSource)
        except _Abort:  # this class stays flat
            continue
    gen.classes.extend(reversed(block_classes))  # rendered in reverse: blocks in forward order
    gen.defaults = {torch_key(gen, k): v for k, v in gen.defaults.items()}


def torch_key(gen, key: str) -> str:
    """The state-dict key of flat key ``key`` after grouping (the same key when nothing was grouped)."""
    key_map = getattr(gen, "key_map", None)
    if not key_map:
        return key
    parts = key.split(".")
    out: list[str] = []
    prefix = ""
    for p in parts:
        new = key_map.get((prefix, p))
        out.extend(new.split(".") if new else [p])
        prefix += p + "."
    return ".".join(out)


# --- analysis ------------------------------------------------------------------------------------

def _names(lines: list[str]):
    """(assigned variables in order, names read in order) of a unit's forward statements."""
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        raise _Abort() from None
    writes: list[str] = []
    local: set = set()  # comprehension and lambda variables: not forward variables
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            local |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Lambda):
            local |= {a.arg for a in node.args.args}
    for stmt in tree.body:
        targets = []
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        elif not isinstance(stmt, (ast.Expr, ast.Return)):
            raise _Abort()  # compound statements: not moved
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name) and n.id not in writes:
                    writes.append(n.id)
            if not all(isinstance(n, (ast.Name, ast.Tuple, ast.List, ast.Starred, ast.Load, ast.Store))
                       for n in ast.walk(t)):
                raise _Abort()  # a subscript or attribute assignment (trace lines are read as expressions)
    reads: list[str] = []
    for n in sorted((n for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)),
                    key=lambda n: (n.lineno, n.col_offset)):
        if n.id not in local and n.id not in reads:
            reads.append(n.id)
    return writes, reads


def _dead(lines: list[str]) -> set[int]:
    from .codegen import _dead_lines

    return _dead_lines(lines)


def _plan(cls, gen):
    marks = getattr(cls, "units", None)
    if not marks or len(marks) < 2:
        return [], []
    dead = _dead(cls.forward)
    units: list[_Unit] = []
    for (layer, _node, i0, f0), (_l, _n, i1, f1) in zip(marks, marks[1:]):
        fwd = [ln for k, ln in enumerate(cls.forward[f0:f1], f0) if k not in dead]
        u = _Unit(layer, list(cls.init[i0:i1]), fwd)
        u.writes, u.reads = _names([_strip_trace(ln) for ln in fwd])
        for ln in u.init:
            m = _DEFINES.search(ln)
            if m:
                u.defines.add(m.group(1) or m.group(3))
        u.uses = {a for ln in u.init + u.forward for a in _SELF_ATTR.findall(ln)}
        units.append(u)
    head_end, tail_start = marks[0][3], marks[-1][3]
    cls._kconv_head = [ln for k, ln in enumerate(cls.forward[:head_end]) if k not in dead]
    cls._kconv_tail = [ln for k, ln in enumerate(cls.forward[tail_start:], tail_start) if k not in dead]
    cls._kconv_init_head = list(cls.init[: marks[0][2]])
    cls._kconv_init_tail = list(cls.init[marks[-1][2]:])
    if cls._kconv_head or cls._kconv_init_head or cls._kconv_init_tail:
        raise _Abort()
    # forward variables are assigned once each (the generator names them uniquely)
    seen: set = set(cls.args)
    for u in units:
        for w in u.writes:
            if w in seen:
                raise _Abort()
            seen.add(w)
    tail_reads = _names(cls._kconv_tail)[1] if cls._kconv_tail else []
    taken_attrs = {a for u in units for a in u.defines}

    # candidate prefixes per layer; a failed group's layers try their next (longer) prefix
    cands: dict[int, list[str]] = {}
    for k, u in enumerate(units):
        if u.layer is None or len(getattr(u.layer, "calls", [])) != 1:
            continue
        c = prefixes(u.layer.name)
        if c:
            cands[k] = c
    level = {k: 0 for k in cands}
    order = list(range(len(units)))  # the forward order of units (groups made contiguous in it)
    groups: list[_Group] = []
    grouped: set = set()
    while True:
        by_prefix: dict[str, list[int]] = {}
        for k, c in cands.items():
            if k not in grouped and level[k] < len(c):
                by_prefix.setdefault(c[level[k]], []).append(k)
        bumped = False
        for prefix, members in sorted(by_prefix.items(), key=lambda kv: order.index(kv[1][0])):
            new_order = None
            attr = identifier(prefix)
            if (len(members) >= 2 and attr not in taken_attrs and all(
                    identifier(units[k].layer.name).startswith(attr + "_") for k in members)):
                new_order = _contiguous(order, set(members), units, groups)
            if new_order is None:
                for k in members:
                    level[k] += 1
                bumped = True
                continue
            g = _Group(prefix, attr, [k for k in new_order if k in set(members)])
            try:
                _interface(g, units, tail_reads, cls)
            except _Abort:
                for k in members:
                    level[k] += 1
                bumped = True
                continue
            order = new_order
            groups.append(g)
            grouped |= set(members)
            taken_attrs.add(attr)
        if not bumped:
            break
    cls._kconv_order = order
    return groups, units


def _contiguous(order: list[int], members: set, units: list, groups: list):
    """``order`` with the units ``members`` adjacent, moving the units between them before (those that
    do not depend on a member) or after (those that do) when no member depends on the latter; None if
    impossible. Units of an earlier group move together with it."""
    pos = [i for i, k in enumerate(order) if k in members]
    first, last = pos[0], pos[-1]
    window = order[first:last + 1]
    bound = {}  # unit -> its group's units (moved as one)
    for g in groups:
        for k in g.units:
            bound[k] = set(g.units)
    writes = {k: set(units[k].writes) for k in window}

    def depends(j, i):
        return bool(set(units[j].reads) & writes[i])

    after: set = set()  # window units that (transitively) read a member's output
    for idx, j in enumerate(window):
        if j in members:
            continue
        if any(depends(j, i) and (i in members or i in after) for i in window[:idx]):
            after.add(j)
    # an earlier group's units cannot be split between before and after
    for k in list(after):
        after |= bound.get(k, set()) & set(window)
    changed = True
    while changed:  # anything in the window reading an 'after' unit must come after too
        changed = False
        for idx, j in enumerate(window):
            if j not in after and j not in members and any(depends(j, i) for i in after if window.index(i) < idx):
                after |= {j} | (bound.get(j, set()) & set(window))
                changed = True
    for j in window:
        if j in members and any(depends(j, i) for i in after if window.index(i) < window.index(j)):
            return None
    if any(k in bound and not bound[k] <= set(window) for k in window if k not in members):
        return None
    before = [k for k in window if k not in members and k not in after]
    return order[:first] + before + [k for k in window if k in members] + [k for k in window if k in after] \
        + order[last + 1:]


def _interface(g: _Group, units: list, tail_reads: list, cls) -> None:
    """The group's inputs and outputs; aborts when a module attribute crosses its boundary."""
    members = set(g.units)
    writes = [w for k in g.units for w in units[k].writes]
    wset = set(writes)
    class_vars = set(cls.args) | {w for u in units for w in u.writes}
    inputs: list[str] = []
    for k in g.units:
        for r in units[k].reads:
            if r in class_vars and r not in wset and r not in inputs:
                inputs.append(r)
    outside_reads = set(tail_reads)
    for k, u in enumerate(units):
        if k not in members:
            outside_reads |= set(u.reads)
    outputs = [w for w in writes if w in outside_reads]
    defines = {a for k in g.units for a in units[k].defines}
    uses = {a for k in g.units for a in units[k].uses}
    if not outputs or not uses <= defines:
        raise _Abort()
    if any(units[k].uses & defines for k in range(len(units)) if k not in members):
        raise _Abort()
    g.inputs, g.outputs = inputs, outputs


# --- rewriting -----------------------------------------------------------------------------------

def _local(name: str, attr: str) -> str:
    """A block-local name for flat name ``name`` of group ``attr``: the prefix dropped and a leading
    number moved behind the word it numbers ('conv2_block1_1_conv' -> 'conv1', '..._0_bn_in' -> 'bn0_in')."""
    rest = name[len(attr) + 1:] if name.startswith(attr + "_") else name
    tokens = [t for t in rest.split("_") if t]
    lead = []
    while len(tokens) > 1 and _DIGITS.match(tokens[0]):
        lead.append(tokens.pop(0))
    if lead:
        tokens[0] += "".join(lead)
    return identifier("_".join(tokens) if tokens else name)


def _unique(base: str, taken: set) -> str:
    cand, i = base, 1
    while cand in taken or cand in _BUILTINS or keyword.iskeyword(cand) or cand in RESERVED:
        cand = f"{base}_{i}"
        i += 1
    taken.add(cand)
    return cand


def _strip_trace(line: str) -> str:
    """TRACE[...] = x reads x; written as an expression so that it is not a subscript assignment."""
    m = re.match(r"TRACE\[(.*)\] = (.*)$", line)
    return f"({m.group(2)})" if m else line


_BLOCK_KEY = "kconv:block"


def _trace_relative(line: str, block_path: str) -> str:
    """A trace line of a block member, keyed relative to the block being run (the same line in every
    instance): TRACE['conv2_block3_1_conv'] = ... -> TRACE[TRACE['kconv:block'] + '_1_conv'] = ..."""
    m = re.match(r"TRACE\[('[^']*'|\"[^\"]*\")\] = (.*)$", line)
    if not m:
        return line
    key = ast.literal_eval(m.group(1))
    if not key.startswith(block_path):
        raise _Abort()
    return f"TRACE[TRACE[{_BLOCK_KEY!r}] + {key[len(block_path):]!r}] = {m.group(2)}"


def _rename(line: str, var_map: dict, attr_map: dict, strings: bool) -> str:
    """``line`` with forward variables (not attributes of other objects) and ``self.<attr>`` renamed;
    ``strings``: also register_buffer's name literals (constructor lines)."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(line + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        raise _Abort() from None
    edits = []
    for i, t in enumerate(toks):
        prev = toks[i - 1] if i else None
        if t.type == tokenize.NAME:
            after_dot = prev is not None and prev.type == tokenize.OP and prev.string == "."
            if after_dot:
                owner = toks[i - 2] if i >= 2 else None
                if owner is not None and owner.type == tokenize.NAME and owner.string == "self" and (
                        i < 3 or toks[i - 3].string != "."):
                    if t.string in attr_map:
                        edits.append((t.start[1], t.end[1], attr_map[t.string]))
            elif t.string in var_map:
                nxt = toks[i + 1] if i + 1 < len(toks) else None
                if nxt is not None and nxt.type == tokenize.OP and nxt.string == "=" and _in_call(toks, i):
                    continue  # a keyword argument's name
                edits.append((t.start[1], t.end[1], var_map[t.string]))
        elif strings and t.type == tokenize.STRING:
            try:
                value = ast.literal_eval(t.string)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, str) and value in attr_map and prev is not None and prev.string == "(":
                edits.append((t.start[1], t.end[1], repr(attr_map[value])))
    for start, end, new in sorted(edits, reverse=True):
        line = line[:start] + new + line[end:]
    return line


def _in_call(toks, i) -> bool:
    depth = 0
    for t in reversed(toks[:i]):
        if t.type == tokenize.OP and t.string in ")]}":
            depth += 1
        elif t.type == tokenize.OP and t.string in "([{":
            if depth == 0:
                return t.string == "("
            depth -= 1
    return False


def _build(cls, groups: list, units: list, gen, block_classes: list, rendered: dict, ClassSource) -> None:
    """Make the block classes of ``cls``'s groups and rewrite ``cls``; changes nothing when it aborts."""
    from .codegen import _class_name

    new_classes: list = []
    new_names: set = set()
    key_map: dict = {}
    rendered_all, rendered = rendered, dict(rendered)
    globals_read = set()
    class_vars = set(cls.args) | {w for u in units for w in u.writes}
    for u in units:
        globals_read |= {r for r in u.reads if r not in class_vars}
    for g in groups:
        attrs = sorted({a for k in g.units for a in units[k].defines})
        taken: set = set()
        attr_map = {a: _unique(_local(a, g.attr), taken) for a in attrs}
        taken = set(globals_read) | {"self"} | set(gen.reserved)
        writes = [w for k in g.units for w in units[k].writes]
        var_map = {w: _unique(_local(w, g.attr), taken) for w in writes}
        params = ["x"] if len(g.inputs) == 1 else [f"x{i}" for i in range(len(g.inputs))]
        params = [_unique(p, taken) for p in params]
        var_map.update(dict(zip(g.inputs, params)))
        src = ClassSource("Block")
        src.args = params
        src.used_vars = set(var_map.values())
        src.init = [_rename(ln, {}, attr_map, True) for k in g.units for ln in units[k].init]
        block_path = cls.keras_prefix + g.prefix
        src.forward = [_rename(_trace_relative(ln, block_path), var_map, attr_map, False)
                       for k in g.units for ln in units[k].forward]
        outs = [var_map[o] for o in g.outputs]
        src.forward.append("return " + ", ".join(outs))
        # the class is chosen on the code without trace lines: the trace variant (verify --per-layer)
        # is the shipped file plus lines, and its blocks are the same classes
        plain = ClassSource("Block", init=src.init, args=src.args,
                            forward=[ln for ln in src.forward if not ln.startswith("TRACE[")])
        text = gen._render(plain).split("\n", 1)[1]
        if text not in rendered:
            name = _class_name(g.prefix)
            base, i = name, 1
            while name in gen.class_names or name in new_names:
                name = f"{base}{i}"
                i += 1
            new_names.add(name)
            rendered[text] = name
            src.name = name
            new_classes.append(src)
        g.source = rendered[text]
        for a, new in attr_map.items():
            key_map[(cls.prefix, a)] = f"{g.attr}.{new}"
    # the class itself: each group's statements replaced by one call, its modules by one
    by_unit = {k: g for g in groups for k in g.units}
    init: list[str] = []
    done: set = set()
    for k, u in enumerate(units):
        g = by_unit.get(k)
        if g is None:
            init += u.init
        elif g.attr not in done:
            init.append(f"self.{g.attr} = {g.source}()")
            done.add(g.attr)
    forward: list[str] = []
    done = set()
    for k in cls._kconv_order:
        g = by_unit.get(k)
        if g is None:
            forward += units[k].forward
        elif g.attr not in done:
            done.add(g.attr)
            if gen.trace:  # the Keras path of the block being run: its trace lines' keys start with it
                forward.append(f"TRACE[{_BLOCK_KEY!r}] = {cls.keras_prefix + g.prefix!r}")
            forward.append(f"{', '.join(g.outputs)} = self.{g.attr}({', '.join(g.inputs)})")
    cls.init = init
    cls.forward = forward + cls._kconv_tail
    cls.registered |= {g.attr for g in groups}
    gen.class_names |= new_names
    gen.key_map.update(key_map)
    block_classes.extend(new_classes)
    rendered_all.update(rendered)
