"""Python/torch names for Keras layers: attribute names of the emitted modules and state-dict keys."""
from __future__ import annotations

import keyword
import re

# Attributes of torch.nn.Module that a submodule name must not shadow.
RESERVED = {"forward", "training", "state_dict", "parameters", "buffers", "children", "modules", "train",
            "eval", "to", "cuda", "cpu", "float", "double", "half", "type", "apply", "register_buffer",
            "register_parameter", "add_module", "zero_grad", "named_modules", "load_state_dict", "torch",
            "F", "nn", "dump_patches", "call_super_init", "T_destination"}


def identifier(name: str) -> str:
    """A valid, non-reserved Python identifier for a Keras name ('conv2d-1' -> 'conv2d_1')."""
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit():
        s = "l_" + s
    if keyword.iskeyword(s) or s in RESERVED or s.startswith("__"):
        s = s + "_"
    return s


def module_names(names: list[str]) -> dict[str, str]:
    """Unique identifiers for the layer names of one model (two names may sanitise alike)."""
    out, used = {}, set()
    for n in names:
        base = identifier(n)
        cand, i = base, 1
        while cand in used:
            cand = f"{base}_{i}"
            i += 1
        used.add(cand)
        out[n] = cand
    return out
