"""A decoding sweep: the grid of settings, the resumable store of finished (task, setting) results, and the
loop that runs what is missing; the reports written from them (CSV, JSON, markdown frontier tables, PNG plots)
are :mod:`selfdistill.eval.reports`. Driven by :mod:`selfdistill.eval.pareto` (``scripts/pareto.py``).

Layout of a sweep folder ``results/<name>/``:

- ``runs/<task>__<setting>.json``: one finished (task, setting): its summary and the *fingerprint* of the
  conditions it was measured under (model, prompt format, limit, seed, dtype, device, batch size, torch threads,
  host, hardware, torch version...). A re-run
  with the same fingerprint skips it; a different fingerprint is refused (``overwrite`` redoes it).
- ``samples/<task>__<setting>.jsonl`` (``.jsonl.gz`` for big runs): one record per scored item (completion,
  extracted answer, gold, correctness, tokens, forward passes), so every number can be audited.
- ``summary.csv``, ``summary.json`` (with provenance), ``frontier.md``, ``plots/<task>.png``.

Metrics are :func:`selfdistill.eval.evaluation.summarize`'s (METHOD.md section 5): accuracy with its binomial
standard error, tokens per forward pass (per-sample ratio with the prefill pass counted, then mean and
standard deviation across samples), tokens/s measured over decoding only at the stated batch size.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from selfdistill.decode.registry import with_options
from selfdistill.eval.agreement import add_agreement
from selfdistill.eval.evaluation import DecodeSetting
from selfdistill.run_folder import refuse_changed
from selfdistill.eval.measured import SWEEPS, sweep_strategies  # noqa: F401  (sweep_strategies: public here too)
from selfdistill.paths import write_text_atomic

#: ConfAdapt thresholds swept in the paper (METHOD.md section 6), most to least conservative.
PAPER_THRESHOLDS = (0.995, 0.99, 0.98, 0.97, 0.96, 0.95, 0.90, 0.87, 0.85, 0.80, 0.75, 0.70, 0.65, 0.60)
PAPER_STATIC_K = (1, 2, 3, 4, 5)
PAPER_K_MAX = 16
#: Fingerprint keys recorded but not compared on resume: where the checkpoint lies (its files' content is compared,
#: as ``checkpoint``), so a fresh clone or a copy of the same model resumes the committed pairs.
RECORDED_ONLY = frozenset({"model_path"})


@with_options("k_max", "mask_margin", "calibrated", note="every point of the strategies that take it")
@dataclass(frozen=True, kw_only=True)
class SweepGrid:
    """The values a sweep's strategies take their points from (:data:`selfdistill.eval.measured.SWEEPS`): the axes
    here, and the registry's ``k_max``, ``mask_margin`` and ``calibrated`` shared by every point (``None``: the
    strategy's default; ``k_max`` then 16, the paper's)."""

    static_k: Sequence[int] = PAPER_STATIC_K
    thresholds: Sequence[float] = PAPER_THRESHOLDS
    verify_threshold: float = 0.0
    hedged_lead_groups: Sequence[int] = ()
    compare_raw: bool = False  # with calibrated ConfAdapt, also sweep each threshold on raw confidences


def sweep_settings(strategies: Sequence[str] | None = None, *, grid: SweepGrid = SweepGrid()) -> list[DecodeSetting]:
    """The settings of a sweep, in report order (registry order: generate, static k, ConfAdapt, verify, ...).

    ``grid.verify_threshold`` is the confidence a mask prediction needs to become a draft in the lossless modes (0:
    every mask prediction is drafted; the output is plain greedy decoding whatever it is). ``grid.mask_margin``
    gives the adaptive strategies the adaptive mask count of :func:`selfdistill.decode.decoder.mtp_generate`.
    ``strategies`` default: the sweep strategies whose ``sweep_default`` is set (all but ``quadratic``).
    """
    chosen = ([n for n in sweep_strategies() if SWEEPS[n].default] if strategies is None
              else list(strategies))
    unknown = sorted(set(chosen) - set(sweep_strategies()))
    if unknown:
        raise ValueError(f"unknown sweep strategies {unknown}; choose from {sweep_strategies()}")
    settings = [DecodeSetting(strategy=name, **point) for name in sweep_strategies() if name in chosen
                for point in SWEEPS[name].points(grid)]
    if not settings:
        raise ValueError("the sweep has no settings: enable generate, static k, thresholds or verify")
    return settings


def needs_mask_token(settings: Sequence[DecodeSetting]) -> bool:
    """Whether any setting appends ``<mtp>`` masks (everything but ``generate`` and static k=1)."""
    return any(s.unit.needs_mask_token for s in settings)


def run_key(task: str, setting: DecodeSetting) -> str:
    """File stem of one (task, setting): ``<task>__<setting name>`` (safe as a file name)."""
    return re.sub(r"[^\w.+-]", "_", f"{task}__{setting.name}")


def setting_fingerprint(setting: DecodeSetting | dict) -> dict:
    """The options a stored pair is compared on: those the strategy takes (an option it does not take is ``None``
    and left out, so adding a strategy option later does not make older sweeps, which stored it, look different).
    Takes a setting or a stored fingerprint's ``setting`` dict."""
    options = setting if isinstance(setting, dict) else asdict(setting)
    return {k: v for k, v in options.items() if v is not None}


class SweepStore:
    """Finished (task, setting) results of one sweep folder, saved as they finish; see the module docstring."""

    def __init__(self, root: str | Path, *, fingerprint: dict, overwrite: bool = False, gzip_samples: bool = False):
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.overwrite = overwrite
        self.gzip_samples = gzip_samples

    def _run_file(self, task: str, setting: DecodeSetting) -> Path:
        return self.root / "runs" / f"{run_key(task, setting)}.json"

    def samples_file(self, task: str, setting: DecodeSetting) -> Path:
        return self.root / "samples" / f"{run_key(task, setting)}.jsonl{'.gz' if self.gzip_samples else ''}"

    def load(self, task: str, setting: DecodeSetting) -> dict | None:
        """The stored summary of (task, setting), ``None`` if not done (or ``overwrite``).

        Raises if it was measured under other conditions, naming the differences: mixing them in one table
        would be wrong, and silently redoing them would throw away work. Raises too if its samples file is gone
        (the agreement columns are computed from it), before anything is decoded.
        """
        path = self._run_file(task, setting)
        if self.overwrite or not path.is_file():
            return None
        stored = json.loads(path.read_text())
        want = self.fingerprint | {"setting": setting_fingerprint(setting)}
        have = stored.get("fingerprint", {})
        have = have | {"setting": setting_fingerprint(have.get("setting", {}))}
        refuse_changed(have, want, may_change=RECORDED_ONLY, where=str(path),
                       hint="Use another --name for the new conditions, or --overwrite to redo them here.")
        samples = self.samples_file(task, setting)
        if not samples.is_file():
            raise FileNotFoundError(
                f"{path} is a finished pair but its samples {samples} are missing (the reports and the agreement "
                "columns are computed from them): restore them, or use --overwrite to redo the pair.")
        return stored["summary"]

    def records(self, task: str, setting: DecodeSetting) -> list[dict]:
        """The stored per-item records of a finished (task, setting)."""
        opener = gzip.open if self.gzip_samples else open
        with opener(self.samples_file(task, setting), "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def save(self, task: str, setting: DecodeSetting, records: list[dict], summary: dict) -> None:
        """Write the samples, then the run file (its presence marks the pair done)."""
        samples = self.samples_file(task, setting)
        samples.parent.mkdir(parents=True, exist_ok=True)
        for stale in samples.parent.glob(f"{run_key(task, setting)}.jsonl*"):
            stale.unlink()
        opener = gzip.open if self.gzip_samples else open
        with opener(samples, "wt", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        # atomic: an interrupted run never leaves a half-written result behind
        write_text_atomic(self._run_file(task, setting), json.dumps(
            {"task": task, "setting": setting.name,
             "fingerprint": self.fingerprint | {"setting": setting_fingerprint(setting)},
             "summary": summary, "samples": str(samples.relative_to(self.root))}, indent=2))


def run_sweep(stores: dict[str, SweepStore], rows: dict[str, list[dict]], grid: Sequence[DecodeSetting],
              load: Callable[[], tuple], *, batch_size: int, max_new_tokens: int, style: str, chat: bool,
              seed: int = 0, progress: bool = True, record: dict | None = None) -> dict[str, list[dict]]:
    """Evaluate every (task, setting) not yet in its store (the model is loaded by ``load()`` only if any is left),
    saving each as it finishes; ``record`` (e.g. threads, host) is added to each new summary, since a resumed
    sweep's rows need not share one machine. Returns ``{task: [summary per setting]}`` in grid order, each with its
    agreement with the sweep's ``generate`` row (:mod:`selfdistill.eval.agreement`) when the grid has one."""
    import torch
    from tqdm.auto import tqdm

    from selfdistill.eval.evaluation import evaluate

    done = {(task, s.name): stores[task].load(task, s) for task in rows for s in grid}
    todo = [(task, s) for task in rows for s in grid if done[(task, s.name)] is None]
    print(f"sweep: {len(grid)} settings x {len(rows)} tasks "
          f"({', '.join(f'{t}: {len(r)} rows' for t, r in rows.items())}); {len(done) - len(todo)} done, "
          f"{len(todo)} to run")
    if todo:
        model, tokenizer = load()
        options = dict(max_new_tokens=max_new_tokens, style=style, chat=chat)
        # Warm-up (lazy init, allocator, kernels) so the first setting's tokens/s is not charged for it.
        for s in {s.strategy: s for s in grid}.values():
            evaluate(model, tokenizer, rows[todo[0][0]][:1], s, batch_size=1, **options | {"max_new_tokens": 4})
        for task, setting in tqdm(todo, desc="sweep", disable=not progress):
            torch.manual_seed(seed)
            records, summary = evaluate(model, tokenizer, rows[task], setting, batch_size=batch_size,
                                        progress=progress, **options)
            summary["by_subtask"] = by_subtask(records)
            summary |= record or {}
            stores[task].save(task, setting, records, summary)
            done[(task, setting.name)] = summary
            tqdm.write(f"{task:>12} {setting.name:<28} acc {summary['accuracy']:.3f} "
                       f"tok/fwd {summary['tokens_per_forward_mean']:.2f} tok/s {summary['tokens_per_second']:.1f}")
    by_name = {s.name: s for s in grid}
    return add_agreement({task: [done[(task, s.name)] for s in grid] for task in rows},
                         lambda task, s: stores[task].records(task, by_name[s["setting"]["name"]]))


def by_subtask(records: list[dict]) -> dict[str, dict]:
    """``{subtask: {"n", "accuracy"}}`` of a task's records (suites mix subtasks; the total hides them)."""
    out: dict[str, dict] = {}
    for r in records:
        d = out.setdefault(r["subtask"] or r["task"], {"n": 0, "correct": 0})
        d["n"] += 1
        d["correct"] += int(r["correct"])
    return {k: {"n": v["n"], "accuracy": v["correct"] / v["n"]} for k, v in out.items()}
