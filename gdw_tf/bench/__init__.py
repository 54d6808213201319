"""Benchmarks, each `python -m gdw_tf.bench.NAME`: accuracy, speed, pipeline.

Each bench defines its absl flags on a `flags.FlagValues` of its own (the trainer's
flags live on the global `FLAGS`, and names such as --data_dir or --epochs mean other
things here), parsed by `gdw_tf.flag_parser.parse`, and its functions take one frozen
config dataclass built from them.
"""
import re

from absl import flags


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
