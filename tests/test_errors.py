"""User-facing errors in one line, and out of memory recognised whatever raised it."""

import torch

from distill_core.errors import OUT_OF_MEMORY_ADVICE, describe_failure, first_line, is_out_of_memory


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
