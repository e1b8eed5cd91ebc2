"""Tiny models: the teacher and student shipped inside the package (where they live, how their tokenizer and model
are built) and tiny random Llama/Qwen3 models for tests and benchmarks (no download, built in milliseconds).

``teacher_path()`` is the embedded default model of every entry point: an ordinary Hugging Face checkpoint
(safetensors + ``tokenizer.json``) made by ``scripts/pretrain_tiny.py`` on the synthetic world of
:mod:`selfdistill.data.synthetic`, so nothing is downloaded and nothing is trained on first use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

from selfdistill.models.mask_token import set_mask_token_id

ASSETS = Path(__file__).resolve().parent.parent / "assets"
ASSET_DIR = ASSETS / "tiny_teacher"
STUDENT_ASSET_DIR = ASSETS / "tiny_student"
#: Model names the entry points accept in place of a path (registered in :mod:`selfdistill.models.loader`).
TINY_TEACHER_ALIAS = "tiny-teacher"
TINY_STUDENT_ALIAS = "tiny-student"

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def _shipped(directory: Path, how_to_rebuild: str) -> Path:
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"the checkpoint is missing from {directory}; rebuild it with `{how_to_rebuild}`")
    return directory


def teacher_path() -> Path:
    """Directory of the shipped tiny teacher checkpoint (the pretrained model, no mask token)."""
    return _shipped(ASSET_DIR, "python scripts/pretrain_tiny.py")


def student_path() -> Path:
    """Directory of the shipped distilled tiny student (the teacher after 7,000 full fine-tune steps; its
    ``distill_config.yaml`` holds the recipe, which is not today's gated ``configs/tiny.yaml``)."""
    return _shipped(STUDENT_ASSET_DIR, "python scripts/online_distill.py --config configs/tiny.yaml --adapter none "
                                       "--k_max 16 --num_regions 5 --learning_rate 3e-4 --ntp_weight 4 "
                                       "--max_steps 7000 --synthetic_rows_per_subtask 6000 "
                                       "--output_dir selfdistill/assets/tiny_student")


@dataclass(frozen=True, kw_only=True)
class TinyModelShape:
    """Llama-architecture shape of the tiny teacher (a few million parameters)."""

    vocab_size: int = 1024
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 704
    max_positions: int = 1024


def train_tokenizer(texts: Iterable[str], *, vocab_size: int):
    """A byte-level BPE tokenizer (digits split one per token, so arithmetic stays learnable).

    Returns a ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` as EOS and ``<|pad|>`` as pad; ``save_pretrained``
    writes a normal ``tokenizer.json`` that ``AutoTokenizer`` loads.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD_TOKEN, EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                   model_max_length=TinyModelShape().max_positions)


def build_tiny_llama(shape: TinyModelShape, *, eos_token_id: int, pad_token_id: int, seed: int):
    """A randomly initialised ``LlamaForCausalLM`` of the given shape (tied embeddings; the tiny teacher's start)."""
    from transformers import LlamaForCausalLM

    cfg = tiny_config("llama", vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
                      intermediate_size=shape.intermediate_size, num_layers=shape.num_layers,
                      num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads, max_positions=shape.max_positions,
                      eos_token_id=eos_token_id, pad_token_id=pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


ARCHITECTURES = ("llama", "qwen3")
#: The shape of Llama-3.2-1B (its config.json; 1.24B parameters with tied embeddings), for random-weight benchmarks.
LLAMA_3_2_1B_SHAPE = dict(vocab_size=128256, hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8,
                          intermediate_size=8192, tie_word_embeddings=True)


def tiny_config(arch: str = "llama", *, vocab_size: int = 97, hidden_size: int = 32, num_layers: int = 2,
                num_heads: int = 4, num_kv_heads: int = 2, max_positions: int = 512,
                intermediate_size: int | None = None, tie_word_embeddings: bool = False,
                attn_implementation: str = "sdpa", eos_token_id: int | None = None, pad_token_id: int | None = None):
    """A Llama or Qwen3 config a few thousand parameters big by default (GQA on, so KV heads are exercised).

    ``intermediate_size`` defaults to ``2 * hidden_size``; eos and pad default to ``vocab_size - 2``; the other
    shape options let benchmarks build real-sized random models (e.g. :data:`LLAMA_3_2_1B_SHAPE`).
    """
    eos = vocab_size - 2 if eos_token_id is None else eos_token_id
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size,
                  intermediate_size=intermediate_size or 2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                  max_position_embeddings=max_positions, bos_token_id=None, eos_token_id=eos,
                  pad_token_id=eos if pad_token_id is None else pad_token_id, tie_word_embeddings=tie_word_embeddings)
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
    :func:`selfdistill.models.mask_token.add_mask_token` would.
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
