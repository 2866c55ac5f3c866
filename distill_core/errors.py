"""The one exception type the engine raises for bad input; its message is shown to users as is."""


class DistillError(Exception):
    """A user-facing error: bad spec, bad data, bad hyperparameter, incompatible pair."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message ('' when it has none), cut to `limit` characters:
    how unexpected errors are shown to users, in one line."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return line[:limit] if limit else line
