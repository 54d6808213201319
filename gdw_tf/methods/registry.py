"""The registry of training methods (`--method=NAME`)."""
from gdw_tf.registry import Registry

METHODS = Registry("method")


def register_method(name):
    """Class decorator: registers a `Method` subclass as `--method=name`."""
    def decorator(cls):
        cls.method_name = name
        return METHODS.register(name)(cls)
    return decorator


def available_methods():
    return METHODS.names()


def create_method(method, **options):
    """Returns a `Method` from a registered name (or passes an instance through)."""
    if isinstance(method, str):
        cls = METHODS.get(method)
        check_options(cls, options)
        return cls(**options)
    if options:
        raise ValueError(
            f"method options {sorted(options)} given with a method instance")
    return method


def check_options(cls, options):
    """Raises a ValueError naming any of `options` (names) that method `cls` does not take."""
    unknown = sorted(set(options) - set(cls.option_names()))
    if unknown:
        raise ValueError(f"method '{cls.method_name}' has no option {', '.join(unknown)}; "
                         f"{options_text(cls)}")


def options_text(cls):
    """'its options: a, b' (or 'it takes no options') for error messages."""
    names = cls.option_names()
    return f"its options: {', '.join(names)}" if names else "it takes no options"
