"""Output files that appear whole or not at all, and CSV cells a spreadsheet will not run.

Every file gdw_tf writes (run outputs, the audit's and the converter's files, the
decoded-image cache) goes through `atomic_open`: the content is written to a
temporary file in the destination's directory, flushed to disk, then renamed over
the destination. A reader (or a kill at any moment) sees the old file or the new
one, never a part; the temporary file is removed whenever the write fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class WriteError(OSError):
    """An output file could not be written; str() is one line naming the file and the cause."""

    def __str__(self):
        return self.strerror


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **open_args):
    """`open(path, mode)` for writing, made atomic (module doc); mode "w" or "wb".

    The new file gets the usual permissions (0666 less the umask). An OSError
    (disk full, read-only directory, ...) is re-raised as a WriteError naming `path`.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                   suffix=".tmp")
        with os.fdopen(fd, mode, **open_args) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        if isinstance(error, WriteError):
            raise
        raise WriteError(error.errno, f"cannot write {path}: {error.strerror or error}") from error
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def write_json(path: str, payload) -> None:
    """`payload` as indented JSON through `atomic_open` (numpy floats as floats)."""
    with atomic_open(path) as f:
        json.dump(payload, f, indent=2, default=float)


def save_figure(fig, path: str, **savefig_args) -> str:
    """fig.savefig(path) through `atomic_open` (format from the file extension); returns path."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(path)[1].lstrip(".") or "png", **savefig_args)
    return path


def spreadsheet_safe(cell) -> str:
    """A text cell for a CSV that spreadsheets open: one starting with =, +, -, @, a tab or
    a carriage return would be run as a formula, so it gets a leading apostrophe."""
    text = str(cell)
    return f"'{text}" if text.startswith(_FORMULA_START) else text
