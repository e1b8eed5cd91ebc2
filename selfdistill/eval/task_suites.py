"""Named suites of evaluation rows for the decoding sweeps: which benchmark items a sweep scores a model on.

Every suite returns rows of the normalised schema (:data:`selfdistill.data.prompts.SCHEMA`), so the sweep and the
scoring core (:mod:`selfdistill.eval.evaluation`) never see where they came from.

Suites (:data:`SUITES`):

- ``synthetic``: the synthetic world's *test* split (:mod:`selfdistill.data.synthetic`), every subtask
  (``synth_gsm`` word problems + the four ``synth_bbh`` subtasks), :data:`SYNTHETIC_TEST_SIZE` rows each.
- ``synthetic_dev``: train-side synthetic rows of another draw (:data:`SYNTHETIC_DEV_SEED`), never the test split:
  for choices such as calibration on the tiny models (a small subtask's space may repeat a training question).
- ``bbh_learnt``: the real BIG-Bench-Hard test items of the subtasks the synthetic world teaches
  (:data:`selfdistill.data.synthetic.LEARNT_BBH_SUBTASKS`).
- ``bbh``: real BBH, all 27 subtasks or the ones named in ``subtasks``.
- ``gsm8k``: the GSM8K test split (reported, never tuned on).
- ``gsm8k_dev``: the dev split, GSM8K *train* questions no training run sees
  (:data:`selfdistill.data.benchmarks.gsm8k.DEV_FRACTION`): where recipes and adapters are chosen.
- ``metamathqa``: the validation side of MetaMathQA's split grouped by seed question
  (:func:`selfdistill.data.split.grouped_split`), from a local file or a hub id.

``limit`` caps the rows *per subtask* for the suites made of subtasks (``synthetic``, ``bbh_learnt``, ``bbh``;
each BBH subtask is its own task in lm-eval too) and the rows *in total* for ``gsm8k``, ``gsm8k_dev`` and
``metamathqa``.
Subsampling is a seeded random choice (same ``seed`` -> same rows, whatever the machine) and keeps the
source order of the chosen rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SUITES = ("synthetic", "synthetic_dev", "bbh_learnt", "bbh", "gsm8k", "gsm8k_dev", "metamathqa")
#: Rows per synthetic subtask in the canonical synthetic test split (data seed 0); ``limit`` subsamples it.
SYNTHETIC_TEST_SIZE = 250
#: Fraction of MetaMathQA seed questions held out as validation (the trainer's default split).
METAMATHQA_VALIDATION_FRACTION = 0.01
#: Data seed of the grouped MetaMathQA split (must match the trainer's, so validation is unseen in training).
METAMATHQA_SPLIT_SEED = 0
#: Suites whose ``limit`` applies per subtask rather than in total.
PER_SUBTASK = ("synthetic", "synthetic_dev", "bbh_learnt", "bbh")
#: Data seed of the synthetic dev suite: train-side rows of another draw than the trainer's (seed 0).
SYNTHETIC_DEV_SEED = 1


def check_suite_options(name: str, *, limit: int | None = None, subtasks: Sequence[str] | None = None) -> None:
    """Raise a clear ``ValueError`` for a bad suite request, before anything is loaded."""
    if name not in SUITES:
        raise ValueError(f"unknown task suite {name!r}; choose from {SUITES}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if subtasks is not None:
        if name != "bbh":
            raise ValueError(f"subtasks can only be chosen for the 'bbh' suite, not {name!r}")
        from selfdistill.data.benchmarks.bbh import check_subtasks

        check_subtasks(subtasks)


def subsample(rows: Sequence[dict], *, limit: int | None, seed: int, key: str = "") -> list[dict]:
    """At most ``limit`` of ``rows``, chosen at random with ``(seed, key)``, in their original order."""
    rows = list(rows)
    if limit is None or limit >= len(rows):
        return rows
    keep = sorted(random.Random(f"{key}/{seed}").sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def _per_subtask(rows: list[dict], *, limit: int | None, seed: int, suite: str) -> list[dict]:
    subtasks = list(dict.fromkeys(r["subtask"] for r in rows))  # first-seen order
    out = []
    for sub in subtasks:
        out += subsample([r for r in rows if r["subtask"] == sub], limit=limit, seed=seed, key=f"{suite}/{sub}")
    return out


def suite_rows(name: str, *, limit: int | None = None, seed: int = 0, path: str | None = None,
               subtasks: Sequence[str] | None = None) -> list[dict]:
    """The rows of suite ``name`` (see the module docstring), deterministic in ``(name, limit, seed, path)``.

    ``path`` overrides the data location for the real benchmarks (a local file/dir or a hub id, as the
    :mod:`selfdistill.data.benchmarks` loaders take it); ``subtasks`` picks BBH subtasks for the ``bbh`` suite.
    """
    check_suite_options(name, limit=limit, subtasks=subtasks)
    if name == "synthetic":
        from selfdistill.data.synthetic import SUBTASKS, synthetic_rows

        rows = [r for task, subs in SUBTASKS.items() for sub in subs
                for r in synthetic_rows(task, sub, split="test", n=SYNTHETIC_TEST_SIZE, seed=0)]
    elif name == "synthetic_dev":
        from selfdistill.data.synthetic import SUBTASKS, synthetic_rows

        rows = [r for task, subs in SUBTASKS.items() for sub in subs
                for r in synthetic_rows(task, sub, split="train", n=SYNTHETIC_TEST_SIZE, seed=SYNTHETIC_DEV_SEED)]
    elif name in ("bbh", "bbh_learnt"):
        from selfdistill.data.benchmarks import load_bbh
        from selfdistill.data.synthetic import LEARNT_BBH_SUBTASKS

        rows = list(load_bbh(path, subtasks=LEARNT_BBH_SUBTASKS if name == "bbh_learnt" else subtasks))
    elif name == "gsm8k":
        from selfdistill.data.benchmarks import load_gsm8k

        rows = list(load_gsm8k(path, split="test"))
    elif name == "gsm8k_dev":
        from selfdistill.data.benchmarks.gsm8k import load_gsm8k_dev

        rows = list(load_gsm8k_dev(path))
    else:
        from selfdistill.data.benchmarks import load_metamathqa
        from selfdistill.data.split import grouped_split

        split = grouped_split(load_metamathqa(path), validation_fraction=METAMATHQA_VALIDATION_FRACTION,
                              seed=METAMATHQA_SPLIT_SEED)
        rows = list(split["validation"])
    if name in PER_SUBTASK:
        return _per_subtask(rows, limit=limit, seed=seed, suite=name)
    return subsample(rows, limit=limit, seed=seed, key=name)
