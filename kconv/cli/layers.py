"""``kconv layers``: every Keras layer class kconv knows, with its weights and torch mapping."""
from __future__ import annotations

import json

import click

from .. import specs
from . import main


def catalogue() -> list[dict]:
    out = []
    seen = set()
    for _name, spec in sorted(specs.registry().items(), key=lambda kv: (kv[1].family, kv[0])):
        if id(spec) in seen:
            continue
        seen.add(id(spec))
        weights = []
        decls = spec.weights if not callable(spec.weights) else ()
        for d in decls:
            weights.append({"key": d.key, "role": d.role_name, "torch": d.torch if isinstance(d.torch, str) else None,
                            "transform": None if callable(d.transform) else d.transform.describe(),
                            "trainable": d.trainable if isinstance(d.trainable, bool) else "depends on config",
                            "conditional": d.when is not specs.always})
        out.append({"class_names": list(spec.class_names), "family": spec.family, "summary": spec.summary,
                    "weights": weights, "weights_depend_on_config": callable(spec.weights),
                    "convertible": spec.emit is not None, "notes": list(spec.notes),
                    # the class's own enum-like config keys and the values Keras accepts (specs.COMMON_CHOICES:
                    # data_format, activation, dtype... apply to every class)
                    "choices": {k: list(c.values) for k, c in spec.choices.items()}})
    return out


@main.command("layers")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def layers_cmd(as_json):
    """List every Keras layer class kconv declares, with weights, roles and torch mapping."""
    cat = catalogue()
    if as_json:
        click.echo(json.dumps(cat, indent=2))
        return
    family = None
    for e in cat:
        if e["family"] != family:
            family = e["family"]
            click.echo(f"\n[{family}]")
        names = " / ".join(e["class_names"])
        conv = "" if e["convertible"] else "  (inspect only)"
        click.echo(f"{names}: {e['summary']}{conv}")
        for w in e["weights"]:
            cond = " (conditional)" if w["conditional"] else ""
            tr = {True: "", False: " non-trainable"}.get(w["trainable"], " trainable per config")
            if w["torch"]:
                t = f" -> {w['torch']}" + (f" by {w['transform']}" if w["transform"] else " (per config)")
            else:
                t = ""
            click.echo(f"    {w['role']}{cond}{tr}{t}")
        for k, values in e["choices"].items():
            click.echo(f"    accepts {k}: {', '.join(repr(v) for v in values)}")
        if e["weights_depend_on_config"]:
            click.echo("    weights depend on the wrapped layer / config")
        for n in e["notes"]:
            click.echo(f"    note: {n}")
