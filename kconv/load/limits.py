"""Resource limits for reading untrusted model files (README "Limits and safety").

Every limit has a default, an environment variable (read when ``kconv.load`` is called without
``limits=``) and a field of :class:`Limits` (``kconv.load(path, limits=Limits(...))``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits for untrusted files (README "Limits and safety"; KCONV_MAX_* override them)."""

    # config.json in a .keras archive, model_config attribute of an HDF5 file, --config FILE
    max_config_bytes: int = 64 * MiB
    # uncompressed size of an archive member kconv decompresses into memory (a deflated
    # model.weights.h5); stored (uncompressed) members are read in place and only need to fit the file
    max_member_bytes: int = 4 * GiB
    # uncompressed / compressed size of a compressed archive member or HDF5 dataset (zip bombs);
    # applied to members or datasets above 1 MiB uncompressed
    max_compression_ratio: int = 200
    # entries in a .keras archive
    max_members: int = 10_000
    # bytes of one weight tensor as declared by its HDF5 shape and dtype
    max_tensor_bytes: int = 16 * GiB
    # bytes of a Lambda layer's stored code that inspect summarises
    max_lambda_code_bytes: int = 1 * MiB

    ENV = {
        "max_config_bytes": "KCONV_MAX_CONFIG_BYTES",
        "max_member_bytes": "KCONV_MAX_MEMBER_BYTES",
        "max_compression_ratio": "KCONV_MAX_COMPRESSION_RATIO",
        "max_members": "KCONV_MAX_MEMBERS",
        "max_tensor_bytes": "KCONV_MAX_TENSOR_BYTES",
        "max_lambda_code_bytes": "KCONV_MAX_LAMBDA_CODE_BYTES",
    }

    @classmethod
    def from_env(cls, environ=None) -> "Limits":
        """Defaults, overridden by the ``KCONV_MAX_*`` environment variables (plain integers)."""
        from ..errors import KconvError

        environ = os.environ if environ is None else environ
        kw = {}
        for f in fields(cls):
            var = cls.ENV.get(f.name)
            if var and environ.get(var, "").strip():
                raw = environ[var].strip()
                try:
                    value = int(raw)
                except ValueError:
                    raise KconvError(f"environment variable {var}={raw!r} is not an integer") from None
                if value <= 0:
                    raise KconvError(f"environment variable {var}={raw!r} must be positive")
                kw[f.name] = value
        return cls(**kw)


# Limits.ENV is a plain class attribute (not a dataclass field): no annotation above.
DEFAULT = Limits()
