"""Rendering a :class:`kconv.verify.VerifyResult`: plain text, a rich table (interactive only), HTML.

The per-layer chart is one bar per layer, its length the max abs error on a log scale from
``LOG_MIN`` to ``LOG_MAX``; a zero error draws no bar.
"""
from __future__ import annotations

import html
import math

LOG_MIN, LOG_MAX = -10, 1  # 1e-10 .. 10
BAR_WIDTH = 30


def _fmt_shape(s) -> str:
    return "(" + ", ".join(str(d) for d in s) + ("," if len(s) == 1 else "") + ")"


def _e(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.2e}" if x else "0"


def bar_fraction(err: float) -> float:
    if not err or err <= 0:
        return 0.0
    if math.isinf(err) or math.isnan(err):
        return 1.0
    return min(1.0, max(0.0, (math.log10(err) - LOG_MIN) / (LOG_MAX - LOG_MIN)))


def _bar(err: float, width: int = BAR_WIDTH) -> str:
    eighths = round(bar_fraction(err) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")).ljust(width)


def _status(c) -> str:
    return "ok" if c.passed else ("DIFFERS" + (f" ({c.problem})" if c.problem else ""))


def header_lines(r) -> list[str]:
    ins = ", ".join(f"{i['name']} {_fmt_shape(i['shape'])} {i['dtype']}" for i in r.inputs)
    how = {"generated": f"generated, seed {r.seed}", "file": "from --inputs", "given": "given",
           "reference": "from --reference"}[r.input_source]
    return [f"{r.model} vs {r.converted}",
            f"reference: {r.reference}; torch on {r.device}"
            + (f" ({r.precision})" if r.precision != "float32" else "") + f"; inputs ({how}): {ins}"]


def _table(rows, head) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()  # noqa: E731
    return [fmt(head)] + [fmt(r) for r in rows]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "~"


def _layer_rows(r, width: int):
    """Per-layer rows fitted to ``width`` columns. Layer names and the numbers are never cut; first the
    bar shrinks (30 down to 5), then class names are clipped (marked '~', down to 8), then the bar
    column is left out."""
    first = r.first_divergence
    base = []
    for c in r.layers:
        mark = " <- first" if c is first else ""
        base.append([c.name, c.class_name, c.max_abs_err, _e(c.max_abs_err), _e(c.max_rel_err), _status(c) + mark])
    head = ("layer", "class", "error", "max abs err", "max rel err", "result")
    w = [max(len(str(row[i])) for row in [head, *base]) for i in range(6)]
    rest = w[0] + w[3] + w[4] + w[5] + 2 * 5  # every column but class and bar, with the gaps
    cls_w = max(8, min(w[1], width - rest - 5))
    bar = min(BAR_WIDTH, width - rest - cls_w)
    if bar < 5:
        head = head[:2] + head[3:]
        rows = [(n, _clip(k, cls_w), a, b, res) for n, k, _, a, b, res in base]
    else:
        rows = [(n, _clip(k, cls_w), _bar(err, bar), a, b, res) for n, k, err, a, b, res in base]
    return rows, head


def text(r, width: int | None = None) -> str:
    """The plain-text report (also what non-interactive stdout gets). ``width``: the terminal's
    columns (default: $COLUMNS or the terminal, else 120); the per-layer table fits within it."""
    if width is None:
        import shutil

        width = shutil.get_terminal_size((120, 24)).columns
    lines = header_lines(r) + [""]
    rows = [(c.name, _fmt_shape(c.shape), _e(c.max_abs_err), _e(c.max_rel_err), _status(c)) for c in r.outputs]
    lines += _table(rows, ("output", "shape", "max abs err", "max rel err", "result"))
    if r.layers is not None:
        lines.append("")
        lines.append(f"per layer (max abs err, log scale 1e{LOG_MIN}..1e{LOG_MAX}; trace of {r.trace}):")
        rows, head = _layer_rows(r, width)
        lines += _table(rows, head)
    lines.append("")
    lines += verdict_lines(r)
    return "\n".join(lines)


def verdict_lines(r) -> list[str]:
    out = [f"note: {n}" for n in r.notes]
    n_bad = sum(not c.passed for c in r.outputs)
    tol = f"atol {r.atol:g}, rtol {r.rtol:g}"
    if r.passed:
        out.append(f"PASS: {len(r.outputs)} output(s)" + (f" and {len(r.layers)} layer(s)" if r.layers else "")
                   + f" agree within {tol}")
    else:
        what = f"{n_bad} of {len(r.outputs)} output(s) differ" if n_bad else "the outputs agree but a layer differs"
        out.append(f"FAIL: {what} beyond {tol}")
        d = r.first_divergence
        if d is not None:
            out.append(f"first diverging layer: {d.name} ({d.class_name}), max abs err {_e(d.max_abs_err)}, "
                       f"max rel err {_e(d.max_rel_err)}")
            if d.hint:
                out.append(f"hint ({d.class_name} declaration): {d.hint}")
        elif r.layers is None:
            out.append("rerun with --per-layer to find the first layer that diverges")
    return out


def rich_print(r, console) -> None:
    """The same report as rich tables (for an interactive terminal)."""
    from rich.markup import escape
    from rich.table import Table

    for line in header_lines(r):
        console.print(line, markup=False, highlight=False)
    t = Table(title="outputs", title_justify="left")
    for col in ("output", "shape", "max abs err", "max rel err", "result"):
        t.add_column(col)
    for c in r.outputs:
        t.add_row(escape(c.name), _fmt_shape(c.shape), _e(c.max_abs_err), _e(c.max_rel_err),
                  f"[green]{_status(c)}[/]" if c.passed else f"[bold red]{escape(_status(c))}[/]")
    console.print(t)
    if r.layers is not None:
        t = Table(title=escape(f"per layer: max abs err, log scale 1e{LOG_MIN}..1e{LOG_MAX} (trace of {r.trace})"),
                  title_justify="left")
        rows, head = _layer_rows(r, console.width - 3 * 6 - 1)  # rich adds borders and padding
        for col in head:
            t.add_column(col)
        for c, row in zip(r.layers, rows):
            colour = "green" if c.passed else "red"
            cells = [escape(str(x)) for x in row]
            if "error" in head:
                cells[2] = f"[{colour}]{row[2]}[/]"
            cells[-1] = f"[{colour}]{cells[-1]}[/]"
            t.add_row(*cells)
        console.print(t)
    for line in verdict_lines(r):
        style = "bold green" if line.startswith("PASS") else ("bold red" if line.startswith("FAIL") else None)
        console.print(line, style=style, markup=False, highlight=False)


def html_report(r) -> str:
    """A standalone HTML page (no external resources): summary, outputs table, per-layer bar chart."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>kconv verify: {esc(r.model)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left;font-size:14px}"
             ".bar{height:12px;display:inline-block}.ok{background:#3a3}.bad{background:#d33}"
             ".track{width:300px;background:#eee;display:inline-block}"
             ".pass{color:#282}.fail{color:#c22;font-weight:bold}</style></head><body>",
             "<h1>kconv verify</h1>"]
    for line in header_lines(r):
        parts.append(f"<p>{esc(line)}</p>")
    verdict = verdict_lines(r)
    parts.append("".join(f"<p class='{'pass' if r.passed else 'fail'}'>{esc(v)}</p>" for v in verdict))
    parts.append("<h2>Outputs</h2><table><tr><th>output</th><th>shape</th><th>max abs err</th>"
                 "<th>max rel err</th><th>result</th></tr>")
    for c in r.outputs:
        parts.append(f"<tr><td>{esc(c.name)}</td><td>{esc(_fmt_shape(c.shape))}</td><td>{_e(c.max_abs_err)}</td>"
                     f"<td>{_e(c.max_rel_err)}</td><td class='{'pass' if c.passed else 'fail'}'>"
                     f"{esc(_status(c))}</td></tr>")
    parts.append("</table>")
    if r.layers is not None:
        parts.append(f"<h2>Per layer</h2><p>Bar: max abs error on a log scale from 1e{LOG_MIN} to 1e{LOG_MAX}. "
                     f"Trace of {esc(r.trace)}.</p>")
        parts.append("<table><tr><th>layer</th><th>class</th><th>error</th><th>max abs err</th>"
                     "<th>max rel err</th><th>result</th></tr>")
        first = r.first_divergence
        for c in r.layers:
            width = round(bar_fraction(c.max_abs_err) * 300)
            mark = " &larr; first divergence" if c is first else ""
            parts.append(f"<tr><td>{esc(c.name)}</td><td>{esc(c.class_name)}</td>"
                         f"<td><span class='track'><span class='bar {'ok' if c.passed else 'bad'}' "
                         f"style='width:{width}px'></span></span></td>"
                         f"<td>{_e(c.max_abs_err)}</td><td>{_e(c.max_rel_err)}</td>"
                         f"<td class='{'pass' if c.passed else 'fail'}'>{esc(_status(c))}{mark}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
