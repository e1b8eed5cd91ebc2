"""Training rows named by a dataset spec, in the normalised schema (``selfdistill.data.prompts.SCHEMA``).

Specs (:func:`load_rows`): ``synthetic`` / ``synthetic:<tasks>`` (the embedded world), ``metamathqa`` /
``metamathqa:<path or hub id>`` (grouped train/validation split), ``gsm8k`` / ``gsm8k:<path>`` (its dev questions
never train), ``onpolicy:<folder>`` (a model's own answers written by ``scripts/onpolicy_data.py``, joined
by id with the dataset they answer; with ``--dataset magpie``, its own questions too), a local
``.json``/``.jsonl``/``.parquet`` file or ``save_to_disk`` folder already in the schema, or several of these joined
by `` + `` (a mix: each split on its own, then concatenated; the trainer shuffles).
The trainer (``selfdistill.train``) and the on-policy data recipe (``selfdistill.eval.onpolicy_data``) read them here.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from selfdistill.data.prompts import SCHEMA

SPLITS = ("train", "validation")
#: Joins specs into one dataset, each split on its own: ``onpolicy:a + onpolicy:b``.
MIX = " + "
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


def load_rows(spec: str, *, split: str = "train", seed: int = 0, validation_fraction: float = 0.01,
              synthetic_rows_per_subtask: int = 500) -> datasets.Dataset:
    """Rows in the normalised schema named by ``spec`` (see the module docstring), for ``split``.

    ``split``: ``train`` or ``validation``. MetaMathQA is split by seed question (``group``); the synthetic world
    uses its own ``test`` split for validation; local files are split by ``group`` the same way.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if MIX in spec:
        parts = [part.strip() for part in spec.split(MIX)]
        return datasets.concatenate_datasets([
            load_rows(part, split=split, seed=seed, validation_fraction=validation_fraction,
                      synthetic_rows_per_subtask=synthetic_rows_per_subtask).select_columns(list(SCHEMA))
            for part in parts])
    name, _, arg = spec.partition(":")
    if name == "magpie":
        raise ValueError("'magpie' rows are written by scripts/onpolicy_data.py --dataset magpie (the model samples "
                         "its own questions); train on that folder with 'onpolicy:<folder>'")
    if name == "synthetic":
        from selfdistill.data.synthetic import synthetic_dataset

        tasks = tuple(arg.split(",")) if arg else ("synth_gsm", "synth_bbh")
        return synthetic_dataset("train" if split == "train" else "test", n_per_subtask=synthetic_rows_per_subtask,
                                 seed=seed, tasks=tasks)
    if name == "metamathqa":
        from selfdistill.data.benchmarks import load_metamathqa

        return _group_split(load_metamathqa(arg or None), split, validation_fraction, seed)
    if name == "gsm8k":
        from selfdistill.data.benchmarks import load_gsm8k

        from selfdistill.data.benchmarks.gsm8k import dev_split

        # GSM8K's train split trains; its test split is the benchmark, so validation comes from train's tail. The
        # dev questions (benchmarks.gsm8k.DEV_FRACTION: the held-out side at seed 0, fraction 0.01) never train.
        train = load_gsm8k(arg or None, split="train")
        rows = _group_split(train, split, validation_fraction, seed)
        if split == "train":
            dev = set(dev_split(train)["validation"]["group"])
            groups = rows.select_columns(["group"]).to_dict()["group"]
            rows = rows.select([i for i, g in enumerate(groups) if g not in dev])
        return rows
    if name == "onpolicy":
        return _group_split(_load_onpolicy(arg), split, validation_fraction, seed)
    if os.path.exists(os.path.expanduser(spec)):
        return _group_split(_load_local(os.path.expanduser(spec)), split, validation_fraction, seed)
    if spec.endswith(LOCAL_SUFFIXES) or os.sep in spec or spec.startswith((".", "~")):
        raise FileNotFoundError(f"dataset file {spec} does not exist")
    raise ValueError(f"unknown dataset {spec!r}: use 'synthetic', 'metamathqa[:path-or-hub-id]', 'gsm8k[:path]', "
                     "'onpolicy:<folder>', or a local file/folder in the normalised schema")


def _load_onpolicy(folder: str) -> datasets.Dataset:
    """The finished on-policy rows of ``folder``, joined with the train rows of the dataset they were decoded from
    (as the folder's fingerprint names it: spec, seed, validation fraction)."""
    from selfdistill.data.magpie import MAGPIE, magpie_rows
    from selfdistill.data.onpolicy import join_onpolicy, read_onpolicy_folder

    if not folder:
        raise ValueError("dataset 'onpolicy:' needs a folder: 'onpolicy:<folder written by scripts/onpolicy_data.py>'")
    fp, records = read_onpolicy_folder(folder)
    if fp["dataset"] == MAGPIE:  # the model wrote the questions too: the records hold them, nothing to join
        rows = magpie_rows(records)
    else:
        source = load_rows(fp["dataset"], split="train", seed=fp["seed"],
                           validation_fraction=fp["validation_fraction"])
        rows = join_onpolicy(source.to_list(), records)
    if not rows:
        raise ValueError(f"{folder}: no finished on-policy row yet ({len(records)} written): nothing to train on")
    return datasets.Dataset.from_list(rows)


def _load_local(path: str) -> datasets.Dataset:
    if os.path.isdir(path):
        ds = datasets.load_from_disk(path)
    elif path.endswith((".json", ".jsonl")):
        from selfdistill.data.benchmarks.source import read_records

        ds = datasets.Dataset.from_list(read_records(Path(path)))  # UTF-8/JSON errors name the file and line
    elif path.endswith(".parquet"):
        ds = datasets.load_dataset("parquet", data_files=path, split="train")
    else:
        raise ValueError(f"cannot read {path}: expected .json, .jsonl, .parquet or a save_to_disk folder")
    if isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"{path} holds several splits {list(ds)}; point at one split's folder")
    missing = [c for c in SCHEMA if c not in ds.column_names]
    if missing or not len(ds):
        problem = f"rows lack the columns {missing}" if missing else "no rows"
        raise ValueError(f"{path}: {problem}; the normalised schema is {SCHEMA} (docs/data.md)")
    return ds


def _group_split(ds: datasets.Dataset, split: str, validation_fraction: float, seed: int) -> datasets.Dataset:
    from selfdistill.data.split import grouped_split

    return grouped_split(ds, validation_fraction=validation_fraction, seed=seed)[split]
