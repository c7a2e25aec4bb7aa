"""A validated reader for the IDX format (MNIST, Fashion-MNIST), gzipped or not.

Every way a file can be broken (not gzip, wrong magic, truncated, trailing bytes) is
one :class:`DataError` that names the file, never a numpy reshape traceback.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from genclust.errors import DataError

# IDX type codes (third magic byte) -> numpy big-endian dtype
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` files are decompressed)."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read {path}: {err}. Fix: delete it and download it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"corrupt IDX file {path}: bad magic number {raw[:4].hex()}. "
                        "Fix: delete it and download it again")
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupt IDX file {path}: header cut short. Fix: delete it and download it again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"corrupt IDX file {path}: {len(raw) - header} data bytes, shape {shape} needs "
                        f"{expected} (truncated download?). Fix: delete it and download it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


__all__ = ["read_idx"]
