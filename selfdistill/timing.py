"""Wall time that covers queued accelerator work: on a CUDA device, kernels run after the Python call returns, so a
clock read must first wait for the device's queue. On CPU both functions only read the clock / do nothing.

Every benchmark and profile reads time through :func:`clock`, so no timing is taken before the GPU is done.
"""

from __future__ import annotations

import time

import torch


def sync(device) -> None:
    """Wait for the work queued on ``device`` (a no-op unless it is a CUDA device)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` has finished."""
    sync(device)
    return time.perf_counter()
