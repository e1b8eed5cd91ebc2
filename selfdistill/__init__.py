"""selfdistill: multi-token prediction by online self-distillation.

Reference implementation of Kirchenbauer et al., "Multi-Token Prediction via Self-Distillation"
(arXiv 2602.06019): see ``../shared/METHOD.md`` (the project spec) and the README.
"""

__version__ = "0.1.0"
