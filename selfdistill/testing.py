"""Tiny randomly initialised models for tests and demos (no download, built in milliseconds).

Shared by the test suite and the benchmark scripts so that every piece is exercised on the same shapes.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

from selfdistill.mask_token import set_mask_token_id

ARCHITECTURES = ("llama", "qwen3")
#: The shape of Llama-3.2-1B (its config.json; 1.24B parameters with tied embeddings), for random-weight benchmarks.
LLAMA_3_2_1B_SHAPE = dict(vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8,
                          intermediate_size=8192, tie_word_embeddings=True)


def tiny_config(arch: str = "llama", *, vocab_size: int = 97, hidden_size: int = 32, num_layers: int = 2,
                num_heads: int = 4, num_kv_heads: int = 2, max_positions: int = 512,
                intermediate_size: int | None = None, tie_word_embeddings: bool = False,
                attn_implementation: str = "sdpa"):
    """A Llama or Qwen3 config a few thousand parameters big by default (GQA on, so KV heads are exercised).

    ``intermediate_size`` defaults to ``2 * hidden_size``; the other shape options let benchmarks build
    real-sized random models (e.g. :data:`LLAMA_3_2_1B_SHAPE`).
    """
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size,
                  intermediate_size=intermediate_size or 2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                  max_position_embeddings=max_positions, bos_token_id=None, eos_token_id=vocab_size - 2,
                  pad_token_id=vocab_size - 2, tie_word_embeddings=tie_word_embeddings)
    if arch == "llama":
        cfg = LlamaConfig(**common)
    elif arch == "qwen3":
        cfg = Qwen3Config(head_dim=hidden_size // num_heads, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {ARCHITECTURES}")
    cfg._attn_implementation = attn_implementation
    return cfg


def tiny_model(arch: str = "llama", *, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float64,
               seed: int = 0, with_mask_token: bool = True, **config_overrides):
    """A random tiny causal LM in eval mode. With ``with_mask_token`` the last id is the ``<mtp>`` mask.

    Its eos/pad id is ``vocab_size - 2``; the mask id (``vocab_size - 1``) is recorded in the config exactly as
    :func:`selfdistill.mask_token.add_mask_token` would.
    """
    torch.manual_seed(seed)
    cfg = tiny_config(arch, attn_implementation=attn_implementation, **config_overrides)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn_implementation)
    # Scale up the random weights so distributions are peaked enough for argmax/threshold logic to matter.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    if with_mask_token:
        set_mask_token_id(model, cfg.vocab_size - 1)
    return model.eval()
