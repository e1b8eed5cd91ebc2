"""Operation counts of a forward or a decoding pass: hardware-independent and deterministic.

At a small model and batch each operation's dispatch costs more than its arithmetic, on a CPU as on a GPU (where
every op is a kernel launch), so the number of operations a pass runs is the best CPU-side proxy for its cost on
small-model GPU decoding. :func:`count_ops` runs a callable under ``torch.profiler`` and counts the *top-level*
``aten::`` operations (those not called from inside another ``aten::`` op), all of them and the compute ones:
:data:`VIEW_OPS` (views and metadata: no kernel, no copy) left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

#: Top-level ops that only make a view or read metadata: no kernel on any device.
VIEW_OPS = frozenset(f"aten::{name}" for name in (
    "view", "reshape", "slice", "t", "transpose", "expand", "expand_as", "unsqueeze", "squeeze", "select",
    "as_strided", "permute", "view_as", "_unsafe_view", "alias", "detach", "lift_fresh", "split", "chunk",
    "unflatten", "flatten", "unbind", "narrow", "numpy_T", "split_with_sizes", "size", "stride", "dim",
    "is_nonzero", "result_type", "_reshape_alias", "empty_like", "empty", "empty_strided", "resolve_conj",
    "resolve_neg", "_has_compatible_shallow_copy_type", "is_same_size"))


class OpCount(NamedTuple):
    """Top-level ``aten::`` ops: ``all`` of them, ``compute`` (no view/metadata op), and ``by_name``."""

    all: int
    compute: int
    by_name: Counter


def count_ops(fn: Callable[[], object]) -> OpCount:
    """Run ``fn()`` once under the CPU profiler and count its top-level ``aten::`` ops (see the module docstring)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = Counter(e.name for e in prof.events() if e.name.startswith("aten::") and not _inside_aten(e))
    compute = sum(n for name, n in names.items() if name not in VIEW_OPS)
    return OpCount(sum(names.values()), compute, names)


class OpTime(NamedTuple):
    """One ``aten::`` op's calls and self CPU time per run of a profiled callable (see :func:`op_times`)."""

    calls: float
    self_us: float


def op_times(fn: Callable[[], object], *, repeats: int) -> dict[str, OpTime]:
    """Run ``fn()`` ``repeats`` times under the CPU profiler: each ``aten::`` op's calls and self CPU time (us), per
    run. Unlike :func:`count_ops` this is a *time* (hardware- and load-dependent): what is left of a run's wall
    time outside every op's self time is Python, hooks and the profiler's own cost."""
    from torch.profiler import ProfilerActivity, profile

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    return {e.key: OpTime(e.count / repeats, e.self_cpu_time_total / repeats)
            for e in prof.key_averages() if e.key.startswith("aten::")}


def _inside_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False

