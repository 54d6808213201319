"""A run's guards: one-line user errors, an exclusive --output_dir, same flags on resume.

`UserError` is bad input the user can fix (a flag, a file, the data, a diverging
learning rate): `python -m gdw_tf.train` prints its one line and exits with
status 2 (`--traceback` shows the traceback). Anything else is a bug and keeps
its traceback.
"""
import contextlib
import errno
import fcntl
import json
import os
import time

from gdw_tf.files import WriteError, atomic_open

LOCK_FILE = ".lock"
FLAGS_FILE = "flags.json"
USER_ERROR_EXIT_CODE = 2

# Flags that never change what a run computes: they may differ on resume.
HARMLESS_FLAGS = ("verbose", "output_dir", "cache_dir", "traceback", "resume", "checkpoint_steps")
# Flags holding paths: compared as absolute paths.
PATH_FLAGS = ("data_dir", "manual_dir", "init_weights", "labels")


class UserError(Exception):
    """Bad input with a one-line message saying what is wrong and how to fix it."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class NonFiniteError(UserError):
    """Training produced a NaN/Inf loss, gradient or weight (nothing was saved from it)."""


@contextlib.contextmanager
def user_errors():
    """Re-raises ValueError / OSError (what input validation raises) as UserError.

    Wrap set-up code only (flags, files, data, model construction), where these
    errors come from the input; training keeps genuine errors as they are.
    """
    try:
        yield
    except (UserError, WriteError):  # an output not written: see write_errors
        raise
    except (ValueError, OSError) as error:
        raise UserError(str(error) or type(error).__name__) from error


@contextlib.contextmanager
def write_errors(out_dir):
    """An output file of `out_dir` that cannot be written (disk full, read-only, ...) as one
    UserError naming the file; nothing written before it is lost (outputs are replaced
    atomically, and a checkpoint that fails is never recorded)."""
    try:
        yield
    except WriteError as error:
        raise UserError(
            f"{error}; every file written before is intact (checkpoints in "
            f"{os.path.join(out_dir, 'checkpoints')}): free the space and re-run the same "
            "command") from error


class OutputDirLock:
    """Exclusive use of an --output_dir by one process (an flock on DIR/.lock).

    The lock file holds the holder's pid (for the error message). The kernel
    releases the lock when the holder exits or is killed, so a lock left by a
    dead process is simply taken over; the file itself is never deleted (that
    would let two processes lock two different inodes).
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd = None

    def __enter__(self):
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"--output_dir={self.directory}: cannot create {self.path}: "
                            f"{error.strerror}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _holder_pid(fd)
            os.close(fd)
            raise UserError(
                f"--output_dir={self.directory} is in use by another run (pid {holder}); "
                "wait for it to end, or pass another --output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _holder_pid(fd, attempts=20):
    """The pid in the lock file (the holder may not have written it yet)."""
    for _ in range(attempts):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.05)
    return "unknown"


def differing_flags(saved, current, defaults=None, epochs_may_grow=True):
    """Names of the flags whose difference changes the run, sorted.

    `saved` / `current`: flag name -> value (defaults resolved). --epochs may
    grow (the run is extended) unless `epochs_may_grow` is False; the
    HARMLESS_FLAGS may change freely. A flag
    missing from `saved` (the run was made before it existed) counts as saved at
    its value in `defaults` (flag name -> default), else as None.
    """
    differ = []
    defaults = defaults or {}
    for name in sorted(set(saved) | set(current)):
        if name in HARMLESS_FLAGS:
            continue
        old, new = saved.get(name, defaults.get(name)), current.get(name)
        if name in PATH_FLAGS:
            old, new = (None if v is None else os.path.abspath(os.path.expanduser(v))
                        for v in (old, new))
        if (name == "epochs" and epochs_may_grow and old is not None and new is not None
                and new >= old):
            continue
        if old != new:
            differ.append(name)
    return differ


def check_same_flags(directory, current, force=False, defaults=None):
    """Compares `current` with the flags saved in `directory` by the run being resumed
    (`defaults`: as for differing_flags).

    Raises UserError listing every differing flag (saved -> now) unless `force`;
    returns that list. Call it only when there is a checkpoint to resume.
    """
    path = os.path.join(directory, FLAGS_FILE)
    if not os.path.exists(path):
        return []  # a run made before the flags were saved: nothing to compare
    saved = read_json(path)
    differ = differing_flags(saved, current, defaults)
    if differ and not force:
        listed = ", ".join(f"--{n}={saved.get(n)!r} -> {current.get(n)!r}" for n in differ)
        raise UserError(
            f"--output_dir={directory} holds a run made with other flags ({listed}); "
            "re-run with the saved flags (see flags.json there), pass another --output_dir, "
            "or --resume=force to continue it anyway")
    return differ


def read_json(path):
    """The JSON object in `path` (a run's flags.json or results.json) as a dict;
    UserError naming the file (and line) when it cannot be read or is not an object."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); restore it from "
                        "a copy of the run, or pass another --output_dir") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, 'strerror', None) or error
        raise UserError(f"cannot read {path}: {reason}") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(saved).__name__}")
    return saved


def save_flags(directory, current):
    """Writes the run's (resolved) flags to DIR/flags.json, atomically."""
    with atomic_open(os.path.join(directory, FLAGS_FILE)) as f:
        json.dump(current, f, indent=2, sort_keys=True)
