"""The one exception type the engine raises for bad input; its message is shown to users as is."""


class DistillError(Exception):
    """A user-facing error: bad spec, bad data, bad hyperparameter, incompatible pair."""
