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


DISK_FULL_ADVICE = ("free space on the disk (the operator's DISTILL_RUNS_CAP_MB keeps the runs folder smaller; "
                    "DISTILL_SAVE_DTYPE=bf16 halves each saved student)")
"""What to do when the disk is full."""
DISK_FULL_ERRNOS = (28, 122)
"""ENOSPC (no space left on device) and EDQUOT (disk quota exceeded) on Linux."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception means the disk filled up: an OSError with ENOSPC or EDQUOT, or what libraries that
    write files themselves say instead (safetensors: "StorageFull" / "os error 28"; torch.save: "No space left
    on device" or a failed file write), also when it is the cause of another exception."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        text = str(exc)
        if any(marker in text for marker in ("No space left on device", "StorageFull", "os error 28",
                                             "Disk quota exceeded")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def describe_failure(exc: BaseException) -> str:
    """An unexpected exception as one line for users: out of memory and a full disk with what to do,
    anything else as `Type: first line of its message`."""
    if is_out_of_memory(exc):
        return f"out of memory: {OUT_OF_MEMORY_ADVICE}"
    if is_disk_full(exc):
        return f"the disk is full: {DISK_FULL_ADVICE}"
    return f"{type(exc).__name__}: {first_line(exc) or 'no message'}"
