"""The tiny teacher shipped inside the package: where it lives, and how its tokenizer and model are built.

``teacher_path()`` is the embedded default model of every entry point: an ordinary Hugging Face checkpoint
(safetensors + ``tokenizer.json``) made by ``scripts/pretrain_tiny.py`` on the synthetic world of
:mod:`selfdistill.synthetic`, so nothing is downloaded and nothing is trained on first use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
ASSET_DIR = ASSETS / "tiny_teacher"
STUDENT_ASSET_DIR = ASSETS / "tiny_student"
#: Model names the entry points accept in place of a path, resolved by :func:`resolve_model_path`.
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
    """Directory of the shipped distilled tiny student (the teacher after ``configs/tiny.yaml``)."""
    return _shipped(STUDENT_ASSET_DIR, "accelerate launch scripts/online_distill.py --config configs/tiny.yaml "
                                       "--output_dir selfdistill/assets/tiny_student")


def resolve_model_path(name_or_path: str) -> str:
    """``"tiny-teacher"`` / ``"tiny-student"`` -> the shipped checkpoints' paths; anything else unchanged."""
    aliases = {TINY_TEACHER_ALIAS: teacher_path, TINY_STUDENT_ALIAS: student_path}
    return str(aliases[name_or_path]()) if name_or_path in aliases else name_or_path


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
    """A randomly initialised ``LlamaForCausalLM`` of the given shape (tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
                      intermediate_size=shape.intermediate_size, num_hidden_layers=shape.num_layers,
                      num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
                      max_position_embeddings=shape.max_positions, bos_token_id=None,
                      eos_token_id=eos_token_id, pad_token_id=pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)
