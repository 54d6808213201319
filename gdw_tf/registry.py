"""A small name -> object registry, used for methods, datasets and models."""


class Registry:
    """Maps names to classes or factories; `register` is a decorator."""

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj
        return decorator

    def get(self, name):
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}")
        return self._entries[name]

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries
