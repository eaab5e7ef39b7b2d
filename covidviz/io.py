"""Atomic file writers and strict JSON: readers see the old or the new file, never half of one.

Generic (no knowledge of the run format), so training checkpoints, the run format and the analysis
all write through the same few functions.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so readers see the old or the new content, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_json_ready(o):
    """Recursively: numpy scalars/arrays -> Python, NaN/inf -> None, tuples -> lists, keys -> str,
    paths -> str. The one JSON cleaning rule of the project (strict JSON that browsers can parse)."""
    if isinstance(o, dict):
        return {str(k): to_json_ready(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [to_json_ready(v) for v in o]
    if isinstance(o, np.ndarray):
        return to_json_ready(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, Path):
        return str(o)
    return o


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(to_json_ready(obj), indent=2, allow_nan=False).encode())


def atomic_torch_save(path: str | Path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str | Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
