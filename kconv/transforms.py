"""Weight transforms as data: each can ``apply`` itself to an array and ``describe`` itself.

Used by the layer declarations (kconv.specs) to say how a Keras tensor becomes a torch tensor.
No torch here: transforms work on numpy arrays (numpy is imported where one is transformed: ``kconv
inspect`` imports it with h5py, in the command, see kconv.cli.inspect).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class Transform:
    def apply(self, a: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def lazy(self, a: np.ndarray) -> np.ndarray:
        """``apply``, where the result may be a view of ``a`` (not contiguous): the weights writer
        copies it slice by slice instead of whole."""
        return self.apply(a)

    def shape(self, shape: tuple) -> tuple:
        """The shape after the transform, computed without data."""
        import numpy as np

        return tuple(self.apply(np.empty(shape, dtype=np.int8)).shape)

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def __str__(self) -> str:
        return self.describe()

    def then(self, other: "Transform") -> "Transform":
        if isinstance(self, Identity):
            return other
        if isinstance(other, Identity):
            return self
        mine = self.steps if isinstance(self, Chain) else (self,)
        theirs = other.steps if isinstance(other, Chain) else (other,)
        return Chain(mine + theirs)


@dataclass(frozen=True)
class Identity(Transform):
    """The tensor as it is."""

    def apply(self, a):
        return a

    def lazy(self, a):
        return a

    def shape(self, shape):
        return tuple(shape)

    def describe(self):
        return "as is"


@dataclass(frozen=True)
class Permute(Transform):
    """``numpy.transpose(a, dims)``."""

    dims: tuple

    def apply(self, a):
        import numpy as np

        return np.ascontiguousarray(self.lazy(a))

    def lazy(self, a):
        import numpy as np

        return np.transpose(a, self.dims)

    def shape(self, shape):
        return tuple(shape[d] for d in self.dims)

    def describe(self):
        return "permute(" + ",".join(str(d) for d in self.dims) + ")"


@dataclass(frozen=True)
class Reshape(Transform):
    """A reshape to ``dims`` (C order)."""

    dims: tuple

    def apply(self, a):
        import numpy as np

        return np.ascontiguousarray(self.lazy(a))

    def lazy(self, a):
        return a.reshape(self.dims)

    def shape(self, shape):
        import numpy as np

        n = int(np.prod(shape))
        dims = list(self.dims)
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = n // known if known else 0
        return tuple(dims)

    def describe(self):
        return "reshape(" + ",".join(str(d) for d in self.dims) + ")"


@dataclass(frozen=True)
class Flip(Transform):
    """Reverse the given axes (Theano-era kernels are convolutions, not correlations)."""

    axes: tuple

    def apply(self, a):
        import numpy as np

        return np.ascontiguousarray(self.lazy(a))

    def lazy(self, a):
        import numpy as np

        return np.flip(a, self.axes)

    def shape(self, shape):
        return tuple(shape)

    def describe(self):
        return "flip(" + ",".join(str(d) for d in self.axes) + ")"


@dataclass(frozen=True)
class ReorderBlocks(Transform):
    """Split ``axis`` into equal blocks and put them in a new order, e.g. GRU gates z,r,h -> r,z,n.

    ``order[i]`` is the index of the source block that goes to position ``i``.
    ``names`` only serve the description.
    """

    axis: int
    order: tuple
    names: tuple = ()

    def apply(self, a):
        import numpy as np

        blocks = np.split(a, len(self.order), axis=self.axis)
        return np.ascontiguousarray(np.concatenate([blocks[i] for i in self.order], axis=self.axis))

    def shape(self, shape):
        return tuple(shape)

    def describe(self):
        if self.names:
            src, dst = self.names
            return f"gates {src}->{dst} on axis {self.axis}"
        return f"reorder blocks {self.order} on axis {self.axis}"


@dataclass(frozen=True)
class Take(Transform):
    """``a[index]`` along the first axis (e.g. the input half of a GRU's (2, 3u) bias)."""

    index: int

    def apply(self, a):
        import numpy as np

        return np.ascontiguousarray(self.lazy(a))

    def lazy(self, a):
        return a[self.index]

    def shape(self, shape):
        return tuple(shape[1:])

    def describe(self):
        return f"[{self.index}]"


@dataclass(frozen=True)
class Zeros(Transform):
    """Zeros of the same shape: a torch tensor the Keras weight has no counterpart for, set to 0
    (e.g. an LSTM's bias_hh: Keras has one bias, which becomes bias_ih)."""

    def apply(self, a):
        import numpy as np

        return np.zeros_like(a)

    def shape(self, shape):
        return tuple(shape)

    def describe(self):
        return "zeros (Keras has no such term)"


@dataclass(frozen=True)
class Chain(Transform):
    """``steps`` applied in turn."""

    steps: tuple

    def apply(self, a):
        for s in self.steps:
            a = s.apply(a)
        return a

    def lazy(self, a):
        for s in self.steps:
            a = s.lazy(a)
        return a

    def shape(self, shape):
        for s in self.steps:
            shape = s.shape(shape)
        return tuple(shape)

    def describe(self):
        return " then ".join(s.describe() for s in self.steps)


IDENTITY = Identity()
