"""The one exception type the engine raises for bad input; its message is shown to users as is."""


class DistillError(Exception):
    """A user-facing error: bad spec, bad data, bad hyperparameter, incompatible pair."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message ('' when it has none), cut to `limit` characters:
    how unexpected errors are shown to users, in one line."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return line[:limit] if limit else line


OUT_OF_MEMORY_ADVICE = ("lower batch_size or seq_len, pick a smaller student or teacher, or wait until other "
                        "sessions on this machine have finished")
"""What to do when memory runs out (the session's step failure and the app's messages say it)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception means memory ran out: torch.OutOfMemoryError (CUDA), the CPU allocator's
    "can't allocate memory", or Python's MemoryError. Checked by name, so this module needs no torch."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def describe_failure(exc: BaseException) -> str:
    """An unexpected exception as one line for users: out of memory with what to do, anything else as
    `Type: first line of its message`."""
    if is_out_of_memory(exc):
        return f"out of memory: {OUT_OF_MEMORY_ADVICE}"
    return f"{type(exc).__name__}: {first_line(exc) or 'no message'}"
