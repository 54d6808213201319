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
        return METHODS.get(method)(**options)
    if options:
        raise ValueError(
            f"method options {sorted(options)} given with a method instance")
    return method
