"""A tiny random checkpoint on disk (tokenizer + Llama + ``<mtp>`` mask) for end-to-end tests of the sweep and
the lm-eval adapter, which load models by path. Built in about a second; not a test module."""

from __future__ import annotations

from pathlib import Path

from selfdistill.mask_token import add_mask_token
from selfdistill.prompts import render_training_text
from selfdistill.synthetic import synthetic_dataset
from selfdistill.tiny import TinyModelShape, build_tiny_llama, train_tokenizer


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
