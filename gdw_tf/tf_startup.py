"""Quiet TensorFlow's start-up log lines for the command-line tools.

Loading TensorFlow prints C++ log lines to stderr: oneDNN and CUDA-driver notices, the
CPU's instruction sets and, on a machine without a CUDA driver, `E... failed call to
cuInit: ... UNKNOWN ERROR (303)` when the devices are first listed. The block appears
twice because two of TensorFlow's shared libraries carry their own copy of its platform
code, each printing it when loaded (libtensorflow_framework.so, then
_pywrap_profiler_plugin.so late in `import tensorflow`). Most of the lines are logged
before absl logging is initialised and ignore TF_CPP_MIN_LOG_LEVEL, even at 3.

So `quiet()`, which each tool calls before anything imports TensorFlow, sets
TF_CPP_MIN_LOG_LEVEL=1 (TensorFlow's later INFO lines are dropped; warnings and errors
stay), then imports TensorFlow and lists its devices with file descriptor 2 sent to a
temporary file, restores it and writes back to stderr every captured line that is not a
start-up line. A level the user set is kept as it is; the start-up lines are filtered at
every level but 0, which shows TensorFlow's logging as it is.
"""
import os
import re
import sys
import tempfile

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "1"
# Marks the level as set by quiet(), not by the user, for processes that inherit it
# (`--deterministic` re-executes the trainer).
_SET_BY_GDW_TF = "GDW_TF_QUIET_TF_CPP_MIN_LOG_LEVEL"

_STARTUP_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} .*"  # absl INFO lines (oneDNN, cudart stub, cpu_feature_guard, ...)
    r"|To enable the following instructions: .*")  # cpu_feature_guard's second line
_NO_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT_FAILED = re.compile(r"E\d{4} .*failed call to cuInit")


def startup_lines_removed(text):
    """`text` without TensorFlow's start-up lines; a failed cuInit is one of them only
    when TensorFlow found no CUDA driver (with a driver it is a real error)."""
    no_driver = _NO_DRIVER in text
    kept = [line for line in text.splitlines(keepends=True)
            if not _STARTUP_LINE.fullmatch(line.rstrip("\n"))
            and not (no_driver and _CUINIT_FAILED.match(line))]
    return "".join(kept)


def quiet():
    """Loads TensorFlow without its start-up lines, unless the user set TF_CPP_MIN_LOG_LEVEL=0."""
    level = os.environ.get(LEVEL)
    if level is None or os.environ.get(_SET_BY_GDW_TF) == level:
        os.environ[LEVEL] = os.environ[_SET_BY_GDW_TF] = QUIET_LEVEL
    elif level.strip() == "0":
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        stderr_fd = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # CUDA's initialisation logs here
        finally:
            sys.stderr.flush()
            os.dup2(stderr_fd, 2)
            os.close(stderr_fd)
            captured.seek(0)
            sys.stderr.write(startup_lines_removed(captured.read().decode(errors="replace")))
            sys.stderr.flush()
