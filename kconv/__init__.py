"""kconv: Keras models to PyTorch, inspected, converted and verified."""
from __future__ import annotations

__version__ = "0.1.0"

from .api import convert, load_converted  # noqa: E402
from .load import load  # noqa: E402
from .load.limits import Limits  # noqa: E402

__all__ = ["load", "convert", "load_converted", "Limits", "__version__"]
