"""selfdistill: multi-token prediction by online self-distillation.

Reference implementation of Kirchenbauer et al., "Multi-Token Prediction via Self-Distillation"
(arXiv 2602.06019): see ``../shared/METHOD.md`` (the project spec) and the README.

The package is grouped by stage; imports flow one way (``tests/test_architecture.py`` checks it)::

    models  <- data  <- train           (model loading, mask token, tiny models; benchmarks, prompts; training)
    models  <- decode <- eval            (the multi-token decoder; sweeps, frontiers, the lm-eval model)

What users import is re-exported here, loaded on first use so ``import selfdistill`` stays cheap::

    from selfdistill import load_model, mtp_generate, DistillConfig, run_distillation
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "load_model": "selfdistill.models.loader",
    "mtp_generate": "selfdistill.decode.decoder",
    "MTPOutput": "selfdistill.decode.decoder",
    "DecodeSetting": "selfdistill.eval.evaluation",
    "evaluate": "selfdistill.eval.evaluation",
    "DistillConfig": "selfdistill.train.config",
    "DistillTrainer": "selfdistill.train.trainer",
    "run_distillation": "selfdistill.train.run",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selfdistill' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
