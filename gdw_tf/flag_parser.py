"""Command-line flag parsing of every gdw_tf tool: flag errors as one line, exit status 2.

`python -m gdw_tf.train` parses the global `gdw_tf.flags.FLAGS` through absl's
`app.run` (`app_parser`); the audit and each bench define their flags on a
`flags.FlagValues` of their own and parse them with `parse`.
"""
import sys

from absl import flags

from gdw_tf.run_dir import USER_ERROR_EXIT_CODE


def parse(argv, flag_values, make_config, program, doc):
    """`make_config(flag_values)` after parsing `argv` (argv[0]: the program) from the defaults.

    Each call starts from the flags' defaults, so a process may parse several times.
    --help prints `doc` and the flags and exits with 0; a bad flag, a positional
    argument or a `flags.Error` raised by `make_config` is one line on stderr naming
    `program`, with exit status 2.
    """
    if any(arg in ("--help", "-h", "--helpfull", "--helpshort") for arg in argv[1:]):
        print(f"{doc}\nflags:\n{flag_values.get_help()}")
        sys.exit(0)
    flag_values.unparse_flags()
    try:
        rest = flag_values(argv)
        if len(rest) > 1:
            raise flags.Error(f"unexpected arguments: {' '.join(rest[1:])} "
                              "(flags look like --name=value)")
        return make_config(flag_values)
    except flags.Error as error:
        fail(program, error)


def app_parser(program):
    """A `flags_parser` for absl's `app.run`: the global FLAGS parsed from argv, a flag
    error one line on stderr naming `program`, with exit status 2."""
    def parse_global(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(program, error)
    return parse_global


def fail(program, message):
    """Ends the process with `program: error: message` on stderr and exit status 2."""
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)
