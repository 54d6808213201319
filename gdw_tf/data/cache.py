"""A content-keyed on-disk cache of decoded numpy arrays (one .npz per entry).

The key is any JSON-serialisable description of the inputs (paths, file
sizes, modification times, format version); its SHA-256 names the file, so
any change to the inputs selects a new entry instead of returning stale data.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

CACHE_ENV = "GDW_TF_CACHE_DIR"


def default_cache_dir() -> str:
    """$GDW_TF_CACHE_DIR, else ~/.cache/gdw_tf."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gdw_tf")


def cache_path(cache_dir: str | None, label: str, key) -> str:
    """File for (label, key): <cache_dir>/<label>-<sha256(key)[:16]>.npz."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60]
    return os.path.join(cache_dir or default_cache_dir(), f"{safe}-{digest}.npz")


def cached_arrays(cache_dir: str | None, label: str, key,
                  compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Returns compute()'s dict of arrays, loading it from the cache when present.

    A fresh result is written atomically (temp file + rename), so a crash never
    leaves a half-written entry. Arrays must not be object arrays.
    """
    path = cache_path(cache_dir, label, key)
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:  # corrupt entry: rebuild it
            log.warning("ignoring unreadable cache file %s (%s); rebuilding it", path, e)
    arrays = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    log.info("cached decoded arrays in %s", path)
    return arrays
