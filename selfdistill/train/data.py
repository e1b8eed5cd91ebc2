"""Training windows for distillation: normalised rows -> token ids -> fixed raw-token windows.

A window holds ``num_source_tokens_needed(seq_len, k_min, num_regions)`` raw tokens: enough for every layout the
trainer may draw (the smallest ``k`` at offset 0 reads the most). Each row is rendered with
:func:`selfdistill.data.prompts.render_training_text` (optionally wrapped in the tokenizer's chat template) and ends
with EOS. Two ways to fill windows:

- ``packing=True``: rows are concatenated (EOS-separated) and cut into full windows; only the corpus tail is padded.
- ``packing=False`` (one row per window, as MetaMathQA rows mostly fit): truncate or pad with the pad id.

Every window carries ``valid`` (False on padding) so the step can prune regions past the data.

Data sources (:func:`load_rows`): ``synthetic`` (the embedded world), ``metamathqa`` / ``metamathqa:<path or hub id>``
(grouped train/validation split), ``gsm8k`` / ``gsm8k:<path>``, or a local ``.json``/``.jsonl``/``.parquet`` file or
``save_to_disk`` folder already in the normalised schema.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import numpy as np

from selfdistill.data.prompts import SCHEMA, apply_chat_template, render_training_text

SPLITS = ("train", "validation")
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
logger = logging.getLogger(__name__)


def row_tokens(row: dict, tokenizer, *, chat_template: bool = False) -> tuple[list[int], int]:
    """Token ids of ``prompt + target`` for one normalised row, ending with EOS, and the prompt's token count.

    Plain: the tokenizer's own special tokens (e.g. a BOS) are added as for any text; chat: the template already
    writes them, so none are added again, and the target loses its leading whitespace: the assistant turn starts
    right after the template's generation prompt, where the model writes ``"To"`` and not ``" To"`` (the plain
    zero-shot prompt ends with ``"A:"``, so there the space belongs to the target). The prompt/target boundary is
    read from the fast tokenizer's character offsets (a token that starts inside the prompt, special tokens
    included, is a prompt token); slow tokenizers count the prompt's own tokens.
    """
    prompt, target = render_training_text(row)
    if chat_template:
        prompt, target = apply_chat_template(prompt, tokenizer), target.lstrip()
    specials = not chat_template
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(prompt + target, add_special_tokens=specials, return_offsets_mapping=True)
        n_prompt = sum(1 for start, _ in enc["offset_mapping"] if start < len(prompt))
    else:
        enc = tokenizer(prompt + target, add_special_tokens=specials)
        n_prompt = len(tokenizer(prompt, add_special_tokens=specials)["input_ids"])
    ids = list(enc["input_ids"])
    eos = _eos_id(tokenizer)
    return (ids if ids and ids[-1] == eos else ids + [eos]), n_prompt


def build_windows(sequences: Iterable[Sequence[int]], *, window: int, pad_id: int, packing: bool,
                  prompt_lengths: Sequence[int] | None = None) -> dict[str, np.ndarray | int]:
    """Cut token sequences into ``window``-long rows.

    Returns ``{"input_ids": int64[n, window], "valid": bool[n, window], "completion": bool[n, window],
    "truncated_rows": int}``: ``valid`` is False on padding; ``completion`` is ``valid`` minus each sequence's first
    ``prompt_lengths[i]`` tokens (all of ``valid`` without ``prompt_lengths``); ``truncated_rows`` counts rows cut
    at the window without packing.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    lengths = [0] * len(seqs) if prompt_lengths is None else list(prompt_lengths)
    if len(lengths) != len(seqs):
        raise ValueError(f"{len(lengths)} prompt lengths for {len(seqs)} sequences")
    comps = [np.arange(s.size) >= n for s, n in zip(seqs, lengths)]
    seqs, comps = [s for s in seqs if s.size], [c for s, c in zip(seqs, comps) if s.size]
    if not seqs:
        raise ValueError("no non-empty token sequences to build training windows from")
    if packing:
        flat, flat_comp = np.concatenate(seqs), np.concatenate(comps)
        n = -(-flat.size // window)
        ids = np.full(n * window, pad_id, dtype=np.int64)
        ids[: flat.size] = flat
        valid = np.zeros(n * window, dtype=bool)
        valid[: flat.size] = True
        completion = np.zeros(n * window, dtype=bool)
        completion[: flat.size] = flat_comp
        return {"input_ids": ids.reshape(n, window), "valid": valid.reshape(n, window),
                "completion": completion.reshape(n, window), "truncated_rows": 0}
    ids = np.full((len(seqs), window), pad_id, dtype=np.int64)
    valid = np.zeros((len(seqs), window), dtype=bool)
    completion = np.zeros((len(seqs), window), dtype=bool)
    for i, (s, c) in enumerate(zip(seqs, comps)):
        start = window_start(s.size, prompt_length=s.size - int(c.sum()), window=window)
        s, c = s[start:start + window], c[start:start + window]
        ids[i, : s.size] = s
        valid[i, : s.size] = True
        completion[i, : s.size] = c
    truncated = sum(s.size > window for s in seqs)
    return {"input_ids": ids, "valid": valid, "completion": completion, "truncated_rows": int(truncated)}


def window_start(length: int, *, prompt_length: int, window: int) -> int:
    """Where a row of ``length`` tokens longer than ``window`` is cut without packing: where its completion is.

    The window ends at the row's end when the completion fits (so a long chat prompt cannot push the whole answer
    out, which left completion-only training with no loss item), else it starts a quarter window before the
    completion. A row with no prompt, or one that fits, starts at 0. Pure: ``start`` in ``[0, length - window]``.
    """
    if length <= window:
        return 0
    return max(0, min(length - window, prompt_length - window // 4))


def training_windows(rows: datasets.Dataset, tokenizer, *, window: int, packing: bool, chat_template: bool = False
                     ) -> datasets.Dataset:
    """A torch-formatted dataset of ``input_ids`` long[window], ``valid`` and ``completion`` bool[window] built from
    ``rows`` (``completion``: the target side of each row, EOS included; see :func:`build_windows`)."""
    missing = [c for c in SCHEMA if c not in rows.column_names]
    if missing:
        raise ValueError(f"dataset lacks the normalised columns {missing}; expected {SCHEMA}")
    tokenized = [row_tokens(row, tokenizer, chat_template=chat_template) for row in rows]
    if not tokenized:
        raise ValueError("no rows to build training windows from")
    seqs, prompt_lengths = zip(*tokenized)
    arrays = build_windows(seqs, window=window, pad_id=_pad_id(tokenizer), packing=packing,
                           prompt_lengths=prompt_lengths)
    if arrays["truncated_rows"]:
        logger.warning("%d of %d rows are longer than the %d-token window and were cut (use packing or a longer "
                       "seq_len to keep their tails)", arrays["truncated_rows"], len(seqs), window)
    ds = datasets.Dataset.from_dict({name: arrays[name].tolist() for name in ("input_ids", "valid", "completion")})
    return ds.with_format("torch")


def load_rows(spec: str, *, split: str = "train", seed: int = 0, validation_fraction: float = 0.01,
              synthetic_rows_per_subtask: int = 500) -> datasets.Dataset:
    """Rows in the normalised schema named by ``spec`` (see the module docstring), for ``split``.

    ``split``: ``train`` or ``validation``. MetaMathQA is split by seed question (``group``); the synthetic world
    uses its own ``test`` split for validation; local files are split by ``group`` the same way.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    name, _, arg = spec.partition(":")
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
    if os.path.exists(os.path.expanduser(spec)):
        return _group_split(_load_local(os.path.expanduser(spec)), split, validation_fraction, seed)
    if spec.endswith(LOCAL_SUFFIXES) or os.sep in spec or spec.startswith((".", "~")):
        raise FileNotFoundError(f"dataset file {spec} does not exist")
    raise ValueError(f"unknown dataset {spec!r}: use 'synthetic', 'metamathqa[:path-or-hub-id]', 'gsm8k[:path]', "
                     "or a local file/folder in the normalised schema")


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


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; rows must end with one")
    return int(tokenizer.eos_token_id)


def _pad_id(tokenizer) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _eos_id(tokenizer))
