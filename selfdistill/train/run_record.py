"""``<output_dir>/run_record.json``: what ran (command, commit, hardware, versions, wall time, steps, the first and
last logged metrics), what it consumed (raw window tokens and supervised loss items), and, for a run warm-started
from an adapter (``init_adapter``), its *lineage*: every earlier run the adapter's weights come from, newest first,
each summarised the same way, with the totals over the whole chain.

A parent is read from the adapter folder's own ``run_record.json`` (and its ``distill_config.yaml`` and
``metrics.jsonl`` where its record predates the token counts); a parent with no record is listed as unknown, so a
total never silently leaves a run out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from selfdistill.train.layout import num_source_tokens_needed
from selfdistill.train.run_dir import METRICS_FILE, RESOLVED_CONFIG, RUN_RECORD
from selfdistill.paths import write_text_atomic
from selfdistill.run_folder import provenance_record, read_provenance

#: What a lineage entry keeps of a run's record.
SUMMARY_KEYS = ("command", "commit", "hardware", "time_utc", "wall_time_s", "steps", "dataset", "init_adapter",
                "raw_tokens", "loss_items")


def consumed(config: dict, steps: int, logged: list[dict]) -> dict:
    """``raw_tokens``: window tokens read (steps x global batch x window); ``loss_items``: supervised prediction
    slots, the sum of the logged ``loss_items`` (each log row sums its window of steps)."""
    world = int(config.get("world_size", 1) or 1)
    batch = int(config["per_device_train_batch_size"]) * int(config.get("gradient_accumulation_steps", 1)) * world
    window = num_source_tokens_needed(int(config["seq_len"]), int(config["k_min"]), int(config["num_regions"]))
    return {"raw_tokens": steps * batch * window, "loss_items": sum(int(r.get("loss_items", 0)) for r in logged)}


def summarise(record: dict) -> dict:
    """A lineage entry: :data:`SUMMARY_KEYS` of a run record, its provenance flattened in (either record shape)."""
    flat = read_provenance(record) | {k: v for k, v in record.items() if k != "provenance"}
    return {k: flat[k] for k in SUMMARY_KEYS if k in flat}


def lineage(adapter_dir: str | os.PathLike) -> list[dict]:
    """The runs behind the adapter in ``adapter_dir``, newest first: its own run's summary, then that run's lineage."""
    folder = Path(adapter_dir)
    path = folder / RUN_RECORD
    if not path.is_file():
        return [{"adapter": str(adapter_dir), "unknown": f"no {RUN_RECORD} in the adapter folder"}]
    record = json.loads(path.read_text())
    summary = summarise(record)
    if "raw_tokens" not in summary and (folder / RESOLVED_CONFIG).is_file():
        config = yaml.safe_load((folder / RESOLVED_CONFIG).read_text())
        metrics = folder / METRICS_FILE
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
        summary |= consumed(config, int(record.get("steps", 0)), [r for r in rows if "loss" in r])
        summary.setdefault("dataset", config.get("dataset"))
    return [summary] + list(record.get("lineage", []))


def totals(runs: list[dict]) -> dict:
    """Steps, raw tokens, loss items and wall time summed over ``runs``, and how many of them are unknown."""
    out = {key: sum(r.get(key, 0) or 0 for r in runs) for key in ("steps", "raw_tokens", "loss_items", "wall_time_s")}
    return out | {"runs": len(runs), "unknown_runs": sum("unknown" in r for r in runs)}


def write_run_record(cfg, trainer, run_provenance: dict, wall_time_s: float) -> Path:
    """The run's record (:func:`~selfdistill.run_folder.provenance_record` of ``run_provenance``, taken when the run
    started): wall time, steps, tokens, the first and last logged metrics and, for a warm start, the lineage and its
    totals; written atomically by the main process."""
    from selfdistill.models.loader import resolve_model_path
    from selfdistill.train.run_dir import config_record

    path = Path(cfg.output_dir) / RUN_RECORD
    if trainer.is_world_process_zero():
        logged = [h for h in trainer.state.log_history if "loss" in h]
        config = config_record(cfg) | {"world_size": cfg.world_size}
        steps = trainer.state.global_step
        record = provenance_record(
            run_provenance, wall_time_s=round(wall_time_s, 1), steps=steps, dataset=cfg.dataset,
            init_adapter=cfg.init_adapter, **consumed(config, steps, logged),
            first_logged=logged[0] if logged else None, last_logged=logged[-1] if logged else None)
        if cfg.init_adapter:
            record["lineage"] = lineage(resolve_model_path(cfg.init_adapter))
            record["total"] = totals([summarise(record), *record["lineage"]])
        write_text_atomic(path, json.dumps(record, indent=1))
    return path
