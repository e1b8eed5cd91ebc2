"""Benchmark loaders: each returns a :class:`datasets.Dataset` with exactly the columns of
:data:`selfdistill.data.prompts.SCHEMA` (``id, task, subtask, question, solution, answer, group``; all str).

``path`` is a local file/dir or a hub dataset id (see :mod:`selfdistill.data.benchmarks.source`); ``None`` reads the
offline copies under :func:`selfdistill.paths.default_data_dir`.
"""

from __future__ import annotations

from selfdistill.data.benchmarks.bbh import BBH_SUBTASKS, load_bbh
from selfdistill.data.benchmarks.gsm8k import load_gsm8k
from selfdistill.data.benchmarks.metamathqa import load_metamathqa

#: task name -> loader ``fn(path=None, **options) -> Dataset``.
LOADERS = {"gsm8k": load_gsm8k, "metamathqa": load_metamathqa, "bbh": load_bbh}


def load_benchmark(task: str, path=None, **options):
    """``LOADERS[task](path, **options)``, with a clear error for an unknown task."""
    if task not in LOADERS:
        raise ValueError(f"unknown benchmark {task!r}; choose from {sorted(LOADERS)}")
    return LOADERS[task](path, **options)


__all__ = ["BBH_SUBTASKS", "LOADERS", "load_bbh", "load_benchmark", "load_gsm8k", "load_metamathqa"]
