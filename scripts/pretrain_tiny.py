"""Pretrain the tiny teacher from scratch on the synthetic world (tokenizer included), on CPU.

Usage and options: ``python scripts/pretrain_tiny.py --help``; the recipe is :mod:`selfdistill.train.pretrain_tiny`.
"""

from transformers import HfArgumentParser

from selfdistill.train.pretrain_tiny import PretrainConfig, run_pretrain_tiny
from selfdistill.models.tiny import TinyModelShape

if __name__ == "__main__":
    config, model_shape = HfArgumentParser((PretrainConfig, TinyModelShape)).parse_args_into_dataclasses()
    run_pretrain_tiny(config, model_shape)
