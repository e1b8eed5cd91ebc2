"""The recipe of ``scripts/online_distill.py``: parse a :class:`~selfdistill.train.config.DistillConfig` (a YAML
``--config``, default ``configs/tiny.yaml``, plus CLI overrides), train, and write ``run_record.json``."""

from __future__ import annotations

import time
from collections.abc import Sequence

from selfdistill.paths import REPO_ROOT
from selfdistill.train.config import DistillConfig

DEFAULT_CONFIG = REPO_ROOT / "configs" / "tiny.yaml"


def parse_config(argv: Sequence[str] | None = None, *, prog: str = "online_distill.py",
                 description: str | None = None) -> DistillConfig:
    """``DistillConfig`` from ``--config X.yaml`` (default :data:`DEFAULT_CONFIG`) plus CLI overrides; a bad value
    is a usage error (exit 2) before anything loads."""
    from selfdistill.cli import parse_config as parse

    return parse(DistillConfig, argv, default_config=DEFAULT_CONFIG, prog=prog, description=description)


def run_online_distill(cfg: DistillConfig):
    """Train ``cfg`` and write its run record (command, the commit the run started from, hardware, wall time,
    steps, tokens, lineage); returns the trainer."""
    from selfdistill.provenance import provenance
    from selfdistill.train.run import run_distillation
    from selfdistill.train.run_record import write_run_record

    record = provenance()  # now, so the commit is the one the run started from
    start = time.perf_counter()
    trainer = run_distillation(cfg)
    write_run_record(cfg, trainer, record, time.perf_counter() - start)
    return trainer


def main(argv: Sequence[str] | None = None, *, description: str | None = None):
    """The command line: errors a user can fix (a diverged run, a used or missing folder, a resume that does not
    match) end the process with their message and status 1, not a traceback."""
    import os

    from selfdistill.train.guards import NoLossItemsError, TrainingDivergedError
    from selfdistill.train.run_dir import ResumeMismatchError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run_online_distill(parse_config(argv, description=description))
    except (TrainingDivergedError, NoLossItemsError, ResumeMismatchError, FileExistsError, FileNotFoundError,
            NotADirectoryError, PermissionError) as err:
        raise SystemExit(f"online_distill.py: error: {err}") from None
