"""Checksums of saved parameter trees: what was written is what is read back, or it is refused.

Orbax stores arrays without a checksum of their values: flipped bytes on disk can restore as
parameters of 1e25 and give wrong numbers in silence. Every tree fgsm-repro saves (``final/``, each
checkpoint's train state) is saved with the sha256 of its leaves and checked after restoring.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import numpy as np


def tree_sha256(tree: Any, extra: Any = None) -> str:
    """sha256 of `tree`'s leaves in its flattening order: each leaf's path, dtype, shape and
    bytes; then `extra` (JSON, e.g. a checkpoint's bookkeeping) in a canonical form."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(_on_host(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype.name}|{array.shape}\n".encode())
        digest.update(array.tobytes())
    if extra is not None:
        digest.update(json.dumps(extra, sort_keys=True).encode())
    return digest.hexdigest()


def _on_host(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)  # replicated over the processes (data parallel): whole on each
    return np.asarray(leaf)
