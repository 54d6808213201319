"""Benchmarks, each `python -m gdw_tf.bench.NAME`: accuracy, speed, pipeline.

Each bench defines its absl flags on a `flags.FlagValues` of its own (the trainer's
flags live on the global `FLAGS`, and names such as --data_dir or --epochs mean other
things here), parsed by `gdw_tf.flag_parser.parse`, and its functions take one frozen
config dataclass built from them.
"""
import os
import re
import subprocess
import sys
import threading

from absl import flags

_PRINT_LOCK = threading.Lock()


def run_module(module, args, jobs=1, out=None):
    """`python -m module ARGS` in a child process; its subprocess.CompletedProcess
    (stdout and stderr captured as text).

    TensorFlow's C++ log lines are silenced, and with `jobs` > 1 children running at
    once each gets cores // jobs intra- and inter-op threads. With `out` (the child's
    output directory) the command is printed first and a failure's stderr tail after,
    one print at a time when called from several threads.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if jobs > 1:  # share the cores between the concurrent runs
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
    cmd = [sys.executable, "-m", module, *args]
    if out is not None:
        with _PRINT_LOCK:
            print("running:", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out is not None and proc.returncode != 0:
        with _PRINT_LOCK:
            print(f"FAILED ({out}):\n{proc.stderr[-2000:]}", file=sys.stderr, flush=True)
    return proc


def int_list(flag_values, name):
    """The comma-separated list flag `name` as ints (None if unset), or a flags.ValidationError."""
    if flag_values[name].value is None:
        return None
    try:
        return tuple(int(item) for item in flag_values[name].value)
    except ValueError:
        raise flags.ValidationError(f"--{name} must be comma-separated integers, "
                                    f"got {','.join(flag_values[name].value)}") from None


def method_variant(entry):
    """A --methods entry 'NAME@key=value@...' -> (NAME, ('key=value', ...)); a bare NAME has
    no options."""
    name, *options = entry.split("@")
    return name, tuple(options)


def check_method_entry(entry):
    """Raises flags.ValidationError unless `entry` is NAME[@key=value...] of a known method."""
    from gdw_tf.methods import available_methods

    name, options = method_variant(entry)
    if name not in available_methods():
        raise flags.ValidationError(f"--methods: unknown method {name!r} in {entry!r}; "
                                    f"known: {', '.join(available_methods())}")
    for option in options:
        if not re.fullmatch(r"\w+=[^=]+", option):
            raise flags.ValidationError(f"--methods: {entry!r}: options look like "
                                        f"NAME@key=value[@key=value], got {option!r}")
