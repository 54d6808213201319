"""py_test main: `pytest_main.py TEST_FILE [PYTEST_ARGS...]`, exits with pytest's code.

Bazel's test environment is mapped onto pytest: TEST_TMPDIR -> --basetemp
(so tmp_path lives in the sandbox), XML_OUTPUT_FILE -> --junitxml,
TESTBRIDGE_TEST_ONLY (--test_filter) -> -k. The cache plugin is disabled
because the runfiles tree is not ours to write.
"""
import os
import sys

import pytest


def main(argv):
    # Bazel already starts tests in <runfiles>/<workspace>, the runfiles copy of
    # the workspace root; make that explicit for direct `bazel-bin/...` runs too.
    srcdir, workspace = os.environ.get("TEST_SRCDIR"), os.environ.get("TEST_WORKSPACE")
    if srcdir and workspace and os.path.isdir(os.path.join(srcdir, workspace)):
        os.chdir(os.path.join(srcdir, workspace))
    args = list(argv) + ["-q", "-p", "no:cacheprovider"]
    if os.environ.get("TEST_TMPDIR"):
        args += ["--basetemp", os.path.join(os.environ["TEST_TMPDIR"], "pytest")]
    if os.environ.get("XML_OUTPUT_FILE"):
        args += ["--junitxml", os.environ["XML_OUTPUT_FILE"]]
    if os.environ.get("TESTBRIDGE_TEST_ONLY"):
        args += ["-k", os.environ["TESTBRIDGE_TEST_ONLY"]]
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
