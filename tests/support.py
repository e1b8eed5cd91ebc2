"""Helpers shared by the test folders (``tests/`` is on ``sys.path``, see pyproject): the benchmark data markers,
and a tiny random checkpoint saved on disk (tokenizer + Llama + ``<mtp>`` mask) for end-to-end tests of the sweep
and the lm-eval adapter, which load models by path. Not a test module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfdistill.models.mask_token import add_mask_token
from selfdistill.data.prompts import render_training_text
from selfdistill.data.synthetic import synthetic_dataset
from selfdistill.models.tiny import TinyModelShape, build_tiny_llama, train_tokenizer
from selfdistill.paths import default_bbh_dir, default_gsm8k_dir

REPO = Path(__file__).resolve().parent.parent


def _needs_data(path: Path, name: str):
    """Skip when the offline benchmark copy is absent (a clone without ``../shared/data``), except under CI,
    where a missing copy must fail rather than hide."""
    return pytest.mark.skipif(not path.exists() and not os.environ.get("CI"),
                              reason=f"{name} data absent at {path} (needs ../shared/data or $SELFDISTILL_DATA_DIR)")


needs_gsm8k = _needs_data(default_gsm8k_dir() / "train.jsonl", "GSM8K")
needs_bbh = _needs_data(default_bbh_dir(), "BBH")


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


def attach_random_adapter(model, tokenizer, *, rank: int = 2, std: float = 1.0, seed: int = 0,
                          base_vocab_size: int | None = None):
    """Add ``<mtp>`` to ``model``/``tokenizer`` (a no-op if they have it; ``base_vocab_size`` then says the size
    before), apply gated LoRA and make its ``B`` matrices non-zero (so mask positions really differ from the
    base); returns the model."""
    import torch

    from selfdistill.models import gated_lora
    from selfdistill.models.mask_token import add_mask_token

    vocab = base_vocab_size or model.get_input_embeddings().weight.shape[0]
    mask_id = add_mask_token(model, tokenizer)
    gated_lora.apply_gated_lora(model, gated_lora.GatedLoRAConfig(rank=rank, alpha=2.0 * rank),
                                mask_token_id=mask_id, base_vocab_size=vocab)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, gated_lora.GatedLoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=gen, dtype=m.lora_B.dtype) * std)
    return model


def save_random_teacher_adapter(folder, *, dtype):
    """``(base with <mtp>, gated model)``: a random gated-LoRA adapter on the tiny teacher, saved to ``folder`` (an
    adapter folder ``load_model`` applies to ``tiny-teacher``)."""
    import copy

    from selfdistill.models import gated_lora
    from selfdistill.models.loader import load_model
    from selfdistill.models.mask_token import add_mask_token

    base, tok = load_model("tiny-teacher", dtype=dtype)
    vocab = base.get_input_embeddings().weight.shape[0]
    add_mask_token(base, tok)
    gated = attach_random_adapter(copy.deepcopy(base), tok, base_vocab_size=vocab)
    gated_lora.save_gated_lora(gated, tok, folder, base_model="tiny-teacher")
    return base, gated


class HostReads:
    """Counts, by kind, the host reads of tensor values inside a ``with`` block: each is a device-to-host sync on a
    GPU (``.item``, ``.tolist``, ``float()``/``int()``/``bool()`` of a tensor, ``nonzero``, ``torch.equal``, and
    indexing with a boolean tensor, which runs a ``nonzero`` inside). On a CPU they cost nothing, but their number is
    the same, so a test can state it."""

    READS = frozenset({"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "argwhere",
                       "equal", "allclose", "numpy", "masked_select"})

    def __init__(self):
        import collections

        from torch.overrides import TorchFunctionMode

        counts = self.counts = collections.Counter()
        reads = self.READS

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if name in reads:
                    counts[name] += 1
                elif name in ("__getitem__", "__setitem__") and _has_bool_index(args[1] if len(args) > 1 else None):
                    counts["bool_index"] += 1
                return func(*args, **(kwargs or {}))

        self._mode = Mode()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _has_bool_index(index) -> bool:
    import torch

    items = index if isinstance(index, tuple) else (index,)
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in items)
