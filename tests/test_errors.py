"""User-facing errors in one line, and out of memory recognised whatever raised it."""

import torch

from distill_core.errors import (DISK_FULL_ADVICE, OUT_OF_MEMORY_ADVICE, describe_failure, first_line, is_disk_full,
                                 is_out_of_memory)


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(ValueError("a bad value"))
    assert describe_failure(MemoryError()) == f"out of memory: {OUT_OF_MEMORY_ADVICE}"


def test_failures_in_one_line():
    assert describe_failure(KeyError("weights")) == "KeyError: 'weights'"
    assert describe_failure(RuntimeError("")) == "RuntimeError: no message"
    assert first_line(ValueError("first\nsecond"), limit=3) == "fir"


def test_a_full_disk_is_recognised_whoever_wrote():
    assert is_disk_full(OSError(28, "No space left on device")) and is_disk_full(OSError(122, "Disk quota exceeded"))
    assert is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not is_disk_full(OSError(2, "No such file or directory"))
    assert describe_failure(OSError(28, "No space left on device")) == f"the disk is full: {DISK_FULL_ADVICE}"
