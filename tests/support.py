"""Helpers shared by the test folders (``tests/`` is on ``sys.path``, see pyproject): load a script as a module,
and save a tiny random checkpoint on disk (tokenizer + Llama + ``<mtp>`` mask) for end-to-end tests of the sweep
and the lm-eval adapter, which load models by path. Not a test module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from selfdistill.models.mask_token import add_mask_token
from selfdistill.data.prompts import render_training_text
from selfdistill.data.synthetic import synthetic_dataset
from selfdistill.models.tiny import TinyModelShape, build_tiny_llama, train_tokenizer

REPO = Path(__file__).resolve().parent.parent


def load_script(name: str):
    """``scripts/<name>.py`` as a module (scripts/ is not a package). Registered in ``sys.modules`` because
    dataclasses look their module up while a class is built; loading must have no side effects."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def save_tiny_checkpoint(directory: str | Path, *, vocab_size: int = 320, with_mask_token: bool = True,
                         max_positions: int = 1024) -> Path:
    """Train a small BPE tokenizer on synthetic text, build a random 2-layer Llama over it, save both."""
    directory = Path(directory)
    rows = synthetic_dataset("train", n_per_subtask=20, seed=0)
    tokenizer = train_tokenizer((p + t for p, t in map(render_training_text, rows)), vocab_size=vocab_size)
    shape = TinyModelShape(vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                           intermediate_size=64, max_positions=max_positions)
    model = build_tiny_llama(shape, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             seed=0)
    if with_mask_token:
        add_mask_token(model, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
