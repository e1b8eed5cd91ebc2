"""A run's output folder: one run per folder, a resume that continues it exactly, and a record of what ran.

- A used (non-empty) ``output_dir`` is refused unless the run resumes or ``overwrite_output_dir`` is set; an
  overwrite first deletes the old run's checkpoints and its ``metrics.jsonl``/``run_record.json``/config. A folder
  holding only ``distill_config.yaml`` (a run that failed before its first log or checkpoint) is not used: its
  re-run takes it over.
- A checkpoint resumes into its own run's folder, or into an empty one: another run's checkpoint resumed into a
  used folder is refused (it would cut that folder's metrics back and replace its checkpoints and model).
- ``resume_from_checkpoint``: a checkpoint folder, or ``true`` for the newest *complete* one in ``output_dir``
  (as ``transformers.Trainer``; a folder without ``trainer_state.json`` was cut off while being written).
- A resumed run must have the checkpoint's settings except :data:`RESUME_MAY_CHANGE`; otherwise it is refused with
  the list of changed fields. Its ``metrics.jsonl`` is cut back to the checkpoint's step (so the file ends up as
  an uninterrupted run's), and leftovers of a half-written save (``*.tmp*`` files, incomplete checkpoints) go.
- ``distill_config.yaml`` (in ``output_dir`` and in every checkpoint) holds the settings that actually ran.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import yaml
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from selfdistill.paths import write_text_atomic
from selfdistill.run_folder import ChangedOptionsError, refuse_changed

logger = logging.getLogger(__name__)

RESOLVED_CONFIG = "distill_config.yaml"
METRICS_FILE = "metrics.jsonl"
RUN_RECORD = "run_record.json"
#: Settings a resumed run may change: where and how often it logs, saves and evaluates, how long it trains, how
#: it reports, which of two equal computations it uses. Everything else (model, data, layout, loss, optimiser,
#: schedule, batch, seed) must match.
RESUME_MAY_CHANGE = frozenset({
    "output_dir", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step", "save_strategy",
    "save_steps", "save_total_limit", "eval_strategy", "eval_steps", "do_eval", "max_eval_windows",
    "per_device_eval_batch_size", "max_steps", "num_train_epochs", "resume_from_checkpoint", "overwrite_output_dir",
    "report_to", "run_name", "disable_tqdm", "dataloader_num_workers",
    "gated_shared_prefix"})  # a compute path only: the same loss and gradients up to rounding


class ResumeMismatchError(ChangedOptionsError):
    """A resume whose settings differ from its checkpoint's beyond :data:`RESUME_MAY_CHANGE`."""


_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_TRAINER_STATE = "trainer_state.json"


def config_record(cfg) -> dict:
    """Every field of a ``TrainingArguments`` as plain YAML/JSON values (tokens redacted by ``to_dict``)."""
    return json.loads(cfg.to_json_string())


def write_config(path: Path, cfg) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_record(cfg), sort_keys=True))
    return path


def checkpoints(folder: str | Path, *, complete: bool = True) -> dict[int, Path]:
    """``{step: path}`` of the ``checkpoint-N`` folders in ``folder`` (only those with a trainer state if
    ``complete``, only those without one otherwise)."""
    root = Path(folder)
    found = {}
    for p in root.iterdir() if root.is_dir() else ():
        m = _CHECKPOINT.match(p.name)
        if m and p.is_dir() and (p / _TRAINER_STATE).is_file() == complete:
            found[int(m.group(1))] = p
    return found


def resolve_resume(value, output_dir: str) -> str | None:
    """``resume_from_checkpoint`` as a checkpoint path: ``None``/``false`` -> ``None``; ``true`` -> the newest
    complete checkpoint in ``output_dir``; a path -> itself if it is a complete checkpoint. Raises otherwise."""
    if value is None or value is False or str(value).lower() in ("", "false", "none"):
        return None
    if value is True or str(value).lower() == "true":
        found = checkpoints(output_dir)
        if not found:
            raise FileNotFoundError(f"resume_from_checkpoint true: no complete checkpoint-N folder in {output_dir}")
        return str(found[max(found)])
    if not (Path(value) / _TRAINER_STATE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint {value}: not a complete Trainer checkpoint (no "
                                f"{_TRAINER_STATE}; a save cut off half-way leaves such a folder)")
    return str(value)


def checkpoint_step(checkpoint: str) -> int:
    return int(json.loads((Path(checkpoint) / _TRAINER_STATE).read_text())["global_step"])


def check_resumed_settings(cfg, checkpoint: str) -> None:
    """Refuse (:class:`ResumeMismatchError`) a resume whose settings differ, outside :data:`RESUME_MAY_CHANGE`, from
    the config stored with ``checkpoint`` (or beside it, in its run's folder), naming each changed field."""
    for path in (Path(checkpoint) / RESOLVED_CONFIG, Path(checkpoint).parent / RESOLVED_CONFIG):
        if path.is_file():
            stored = yaml.safe_load(path.read_text()) or {}
            break
    else:
        logger.warning("%s has no %s beside it: the resumed settings cannot be checked", checkpoint, RESOLVED_CONFIG)
        return
    refuse_changed(stored, config_record(cfg), may_change=RESUME_MAY_CHANGE, where=f"checkpoint {checkpoint}",
                   hint=f"Only {sorted(RESUME_MAY_CHANGE)} may change on resume; start a new run in another "
                        "output_dir for the rest.", error=ResumeMismatchError)


def truncate_metrics(output_dir: str, step: int) -> None:
    """Drop the rows of ``metrics.jsonl`` logged after ``step`` (a killed run's, redone by the resumed one)."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    write_text_atomic(path, "".join(kept))


def remove_stale_saves(output_dir: str) -> list[Path]:
    """Delete what a save cut off half-way leaves: ``*.tmp*`` files and checkpoints without a trainer state."""
    root = Path(output_dir)
    stale = list(checkpoints(root, complete=False).values())
    for folder in [root, *checkpoints(root).values()]:
        stale += [p for p in folder.iterdir() if p.is_file() and ".tmp" in p.name] if folder.is_dir() else []
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return stale


def unstarted(output_dir: str) -> bool:
    """A folder that holds nothing but a run's ``distill_config.yaml``: a run that stopped before its first
    checkpoint or log (a bad dataset, a load error), which its re-run may take over."""
    return {p.name for p in Path(output_dir).iterdir()} == {RESOLVED_CONFIG}


def check_resume_target(checkpoint: str, output_dir: str) -> None:
    """A checkpoint resumes into its own run's folder, or into an empty (or unstarted) one: resuming another run's
    checkpoint into a used folder would cut that folder's metrics back, delete its checkpoints and overwrite its
    model and record."""
    own = Path(checkpoint).resolve().parent == Path(output_dir).resolve()
    if not own and os.path.isdir(output_dir) and os.listdir(output_dir) and not unstarted(output_dir):
        raise FileExistsError(f"resume_from_checkpoint {checkpoint} belongs to the run in "
                              f"{Path(checkpoint).parent}, and output_dir {output_dir} holds another run: resume "
                              "into the checkpoint's own folder, or into an empty output_dir")


def clear_previous_run(output_dir: str) -> None:
    """``overwrite_output_dir``: delete an earlier run's checkpoints, metrics, record and config."""
    root = Path(output_dir)
    for p in [*checkpoints(root).values(), *checkpoints(root, complete=False).values()]:
        shutil.rmtree(p)
    for name in (METRICS_FILE, RUN_RECORD, RESOLVED_CONFIG):
        (root / name).unlink(missing_ok=True)


def prepare_output_dir(cfg) -> None:
    """Check ``cfg.output_dir`` and ``cfg.resume_from_checkpoint`` before anything loads (module docstring), set
    ``cfg.resume_from_checkpoint`` to the resolved checkpoint path, tidy the folder and write the config."""
    from selfdistill.cli import check_output_folder

    check_output_folder(cfg.output_dir, flag="output_dir")  # a file, or a folder that cannot be written: say so
    resume = resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir)
    cfg.resume_from_checkpoint = resume
    if cfg.process_index != 0:  # the main process checks and tidies; torchrun stops the others if it fails
        return
    if resume is not None:
        check_resume_target(resume, cfg.output_dir)
        check_resumed_settings(cfg, resume)
        remove_stale_saves(cfg.output_dir)
        truncate_metrics(cfg.output_dir, checkpoint_step(resume))
    elif os.path.isdir(cfg.output_dir) and os.listdir(cfg.output_dir) and not unstarted(cfg.output_dir):
        if not cfg.overwrite_output_dir:
            raise FileExistsError(f"output_dir {cfg.output_dir} is not empty: it holds another run. Resume it "
                                  "(--resume_from_checkpoint true), pick another output_dir, or pass "
                                  "--overwrite_output_dir true to delete its checkpoints and metrics")
        clear_previous_run(cfg.output_dir)
    write_config(Path(cfg.output_dir) / RESOLVED_CONFIG, cfg)


class ConfigInCheckpointCallback(TrainerCallback):
    """Write the settings into every checkpoint, so a resume from it can be checked wherever it is resumed."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_config(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}" / RESOLVED_CONFIG, args)
