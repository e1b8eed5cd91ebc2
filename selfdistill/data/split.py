"""Train/validation split by ``group`` (a row's seed question), for every dataset in the normalised schema."""

from __future__ import annotations

import random

import datasets


def grouped_split(ds: datasets.Dataset, *, validation_fraction: float, seed: int) -> datasets.DatasetDict:
    """``{"train", "validation"}`` split by ``group`` (the seed question), so that no seed question's
    augmentations straddle the two sides; deterministic in ``seed`` and independent of row order.

    ``validation_fraction`` is the fraction of *groups* held out (rounded, at least one group on each side);
    rows keep their original order within each side.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    groups = ds.select_columns(["group"]).to_dict()["group"]  # one Arrow read; iterating ds["group"] is ~100x slower
    unique = sorted(set(groups))  # sorted first so the shuffle does not depend on row order
    if len(unique) < 2:
        raise ValueError(f"need at least 2 distinct groups to split, got {len(unique)}")
    random.Random(seed).shuffle(unique)
    n_val = min(max(1, round(validation_fraction * len(unique))), len(unique) - 1)
    held_out = set(unique[:n_val])
    val_idx = [i for i, g in enumerate(groups) if g in held_out]
    train_idx = [i for i, g in enumerate(groups) if g not in held_out]
    return datasets.DatasetDict({"train": ds.select(train_idx), "validation": ds.select(val_idx)})
