"""The accuracy-vs-speed sweep recipe behind ``scripts/pareto.py`` (its usage and examples are there and in
docs/pareto.md): the sweep's options (:class:`ParetoConfig`), their checks before anything loads, the grid of
settings, and :func:`run_pareto`, which runs the pairs not yet in ``results/<name>/`` and writes the reports
(:mod:`selfdistill.eval.sweep`, :mod:`selfdistill.eval.reports`)."""


from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selfdistill.decode.registry import with_options
from selfdistill.paths import REPO_ROOT
from selfdistill.run_folder import provenance_record
from selfdistill.eval.sweep import PAPER_K_MAX, PAPER_STATIC_K, PAPER_THRESHOLDS
from selfdistill.eval.task_suites import SUITES

PROMPT_STYLES = ("zero_shot", "few_shot")


@with_options("k_max", "mask_margin", "calibrated",
              note=f"for every setting that takes it; k_max default: the trained k_max where the model records one, "
                   f"else {PAPER_K_MAX}; calibrated default: when the model has a confidence map")
@dataclass(kw_only=True)
class ParetoConfig:
    model: str = field(default="tiny-student", metadata={
        "help": "checkpoint path or hub id, or the shipped aliases tiny-student / tiny-teacher"})
    tasks: list[str] = field(default_factory=lambda: ["synthetic", "bbh_learnt"], metadata={
        "help": f"task suites, from {SUITES}"})
    limit: int | None = field(default=10, metadata={
        "help": "rows per subtask (synthetic, bbh_learnt, bbh) or in total (gsm8k, metamathqa); 0 = all"})
    bbh_subtasks: list[str] | None = field(default=None, metadata={"help": "BBH subtasks for the bbh suite"})
    data_path: str | None = field(default=None, metadata={
        "help": "local file/dir or hub id of the real benchmark data (default: ../shared/data)"})
    thresholds: list[float] = field(default_factory=lambda: list(PAPER_THRESHOLDS),
                                    metadata={"help": "ConfAdapt thresholds"})
    compare_raw: bool = field(default=False, metadata={
        "help": "also sweep every ConfAdapt threshold on raw confidences, beside the calibrated ones (needs a model "
                "with a confidence map)"})
    static_k: list[int] = field(default_factory=lambda: list(PAPER_STATIC_K), metadata={"help": "static k values"})
    static: bool = field(default=True, metadata={"help": "include the static k settings (--static_k)"})
    conf_adapt: bool = field(default=True, metadata={"help": "include the ConfAdapt settings (--thresholds)"})
    verify: bool = field(default=True, metadata={"help": "include the lossless verify mode"})
    quadratic: bool = field(default=False, metadata={"help": "include lossless quadratic decoding (k_max^2 per pass)"})
    hedged: list[int] = field(default_factory=list, metadata={
        "help": "lead_groups values of lossless hedged verify (mask groups after the first provisional tokens; "
                "none by default)"})
    verify_threshold: float = field(default=0.0, metadata={
        "help": "draft confidence threshold of verify, quadratic and hedged"})
    generate_baseline: bool = field(default=True, metadata={"help": "include plain model.generate"})
    add_mask_token: bool = field(default=False, metadata={
        "help": "give a model without <mtp> an untrained one (step-0 baseline) instead of refusing"})
    batch_size: int = 8
    dtype: str | None = field(default=None, metadata={
        "help": "float32, bfloat16, float16, float64 or auto (the checkpoint's); default: bfloat16 on CUDA, "
                "float32 on CPU"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:1..."})
    prompt_style: str = field(default="zero_shot", metadata={"help": f"one of {PROMPT_STYLES}"})
    chat_template: bool = field(default=False, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    max_new_tokens: int = 192
    seed: int = field(default=0, metadata={"help": "subsampling seed (decoding is greedy)"})
    num_threads: int = field(default=1, metadata={
        "help": "torch CPU threads; 1 is fastest for the tiny model on a shared CPU; 0 = torch's default"})
    output_dir: str = field(default=str(REPO_ROOT / "results"), metadata={"help": "parent of results/<name>/"})
    name: str | None = field(default=None, metadata={"help": "sweep folder name (default: from the model name)"})
    overwrite: bool = field(default=False, metadata={"help": "redo (task, setting) pairs already in the folder"})
    gzip_samples: str = field(default="auto", metadata={
        "help": "auto (gzip when a task has more than 100 rows), yes, no"})
    plots: bool = True
    progress: bool = True


def check_config(cfg: ParetoConfig) -> None:
    """Every argument error, raised as a ``ValueError`` naming the problem, before any data or model loads."""
    from selfdistill.eval.task_suites import check_suite_options

    if not cfg.tasks:
        raise ValueError("no tasks given")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ValueError(f"duplicate tasks: {cfg.tasks}")
    for task in cfg.tasks:
        check_suite_options(task, limit=cfg.limit or None, subtasks=cfg.bbh_subtasks if task == "bbh" else None)
    if cfg.bbh_subtasks is not None and "bbh" not in cfg.tasks:
        raise ValueError("--bbh_subtasks given but the bbh suite is not among --tasks")
    if cfg.limit is not None and cfg.limit < 0:
        raise ValueError(f"limit must be >= 0 (0 = all rows), got {cfg.limit}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}")
    if (cfg.k_max is not None and cfg.k_max < 1) or any(k < 1 for k in cfg.static_k):
        raise ValueError(f"k_max and static k must be >= 1 (got k_max={cfg.k_max}, static_k={cfg.static_k})")
    from selfdistill.models.loader import resolve_device, resolve_run_dtype

    cfg.dtype = resolve_run_dtype(cfg.dtype, device=cfg.device)
    if cfg.prompt_style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt_style {cfg.prompt_style!r}; choose from {PROMPT_STYLES}")
    if cfg.gzip_samples not in ("auto", "yes", "no"):
        raise ValueError(f"gzip_samples must be auto, yes or no, got {cfg.gzip_samples!r}")
    resolve_device(cfg.device)
    if cfg.num_threads < 0:
        raise ValueError(f"num_threads must be >= 0 (0 = torch's default), got {cfg.num_threads}")
    from selfdistill.cli import check_output_folder

    check_output_folder(sweep_root(cfg), flag="--output_dir/--name")
    settings(cfg, has_calibration=True)  # threshold range, duplicates, empty grid (the map is checked at load)


def sweep_root(cfg: ParetoConfig) -> Path:
    """``<output_dir>/<name>``; ``name`` (default: from the model's name) must be a plain folder name."""
    from selfdistill.cli import plain_folder_name

    name = cfg.name or re.sub(r"[^\w.+-]", "_", Path(cfg.model.rstrip("/")).name)
    return Path(cfg.output_dir) / plain_folder_name(name, flag="--name")


def measured_on(num_threads: int) -> dict:
    """What tokens/s depends on besides the settings: torch threads, host, CPU/GPU, torch version."""
    import platform

    import torch

    from selfdistill.provenance import hardware

    return {"num_threads": num_threads, "host": platform.node(), "hardware": hardware(), "torch": torch.__version__}


def settings(cfg: ParetoConfig, *, trained_k_max: int | None = None, has_calibration: bool = False):
    """The grid: every registered sweep strategy whose switch (``measured.SWEEPS``, a field above) is on.
    ``trained_k_max``: the model's (``loader.trained_k_max_at``), the ``k_max`` when ``--k_max`` is not given;
    ``has_calibration``: whether the model carries a confidence map (ConfAdapt's default ``--calibrated``)."""
    from selfdistill.eval.measured import SWEEPS, sweep_strategies
    from selfdistill.eval.sweep import SweepGrid, sweep_settings

    chosen = [n for n in sweep_strategies() if getattr(cfg, SWEEPS[n].flag)]
    k_max = cfg.k_max or trained_k_max or PAPER_K_MAX
    return sweep_settings(chosen, grid=SweepGrid(static_k=cfg.static_k, thresholds=cfg.thresholds, k_max=k_max,
                                                 verify_threshold=cfg.verify_threshold, mask_margin=cfg.mask_margin,
                                                 hedged_lead_groups=cfg.hedged, compare_raw=cfg.compare_raw,
                                                 calibrated=has_calibration if cfg.calibrated is None
                                                 else cfg.calibrated))


def resolve_model(name: str) -> str:
    """The checkpoint path of ``name`` (aliases resolved), with an error that says what to do if it is absent."""
    from selfdistill.models.loader import resolve_model_path
    from selfdistill.models.tiny import TINY_STUDENT_ALIAS

    try:
        return resolve_model_path(name)
    except FileNotFoundError as err:
        hint = (" Until the distilled student ships, sweep the teacher as a step-0 baseline: "
                "--model tiny-teacher --add_mask_token.") if name == TINY_STUDENT_ALIAS else ""
        raise FileNotFoundError(f"model {name!r}: {err}.{hint}") from err


def check_mask_token(path: str, *, needed: bool, add: bool) -> None:
    """Refuse, before loading weights, a model without ``<mtp>`` when the grid needs masks (unless ``add``)."""
    if not needed or add:
        return
    from selfdistill.models.mask_token import require_mask_token

    require_mask_token(path, needed_by="static k>1, ConfAdapt and verify",
                       remedy="use a distilled checkpoint, --add_mask_token for an untrained-mask (step-0) baseline, "
                              "or only --generate_baseline / --static_k 1")


def checkpoint_signature(path: str) -> str:
    """Name, size and SHA-256 prefix of each weight/config file of a local checkpoint, so a re-run after the
    checkpoint was replaced at the same path is refused rather than served stale results, while a fresh clone or a
    copy (new modification times, same bytes) resumes; a hub id as given. Reads the files once (about 1 s per GB)."""
    root = Path(path)
    if not root.is_dir():
        return path
    files = sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    return ";".join(f"{p.name}:{p.stat().st_size}:{file_sha256(p)[:16]}" for p in files)


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_model(path: str, cfg: ParetoConfig, *, add_mask: bool):
    from selfdistill.models import loader

    return loader.load_model(path, dtype=cfg.dtype, device=cfg.device, add_mask_token=add_mask, seed=cfg.seed)


def run_pareto(cfg: ParetoConfig) -> Path:
    """Run the sweep (skipping finished pairs), then write the reports. Returns ``results/<name>``."""
    import torch

    from selfdistill.eval.reports import write_reports
    from selfdistill.eval.sweep import SweepStore, needs_mask_token, run_sweep
    from selfdistill.eval.task_suites import suite_rows
    from selfdistill.models.loader import calibration_at, trained_k_max_at
    from selfdistill.provenance import provenance

    check_config(cfg)
    model_path = resolve_model(cfg.model)
    grid = settings(cfg, trained_k_max=trained_k_max_at(model_path),
                    has_calibration=calibration_at(model_path) is not None)
    root = sweep_root(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    machine = measured_on(torch.get_num_threads())
    limit = cfg.limit or None
    rows = {task: suite_rows(task, limit=limit, seed=cfg.seed, path=cfg.data_path,
                             subtasks=cfg.bbh_subtasks if task == "bbh" else None) for task in cfg.tasks}
    check_mask_token(model_path, needed=needs_mask_token(grid), add=cfg.add_mask_token)

    fingerprint = {"model": cfg.model, "model_path": model_path, "checkpoint": checkpoint_signature(model_path),
                   "add_mask_token": cfg.add_mask_token,
                   "limit": limit, "seed": cfg.seed, "data_path": cfg.data_path, "bbh_subtasks": cfg.bbh_subtasks,
                   "dtype": cfg.dtype, "device": cfg.device, "batch_size": cfg.batch_size,
                   "prompt_style": cfg.prompt_style, "chat_template": cfg.chat_template,
                   "max_new_tokens": cfg.max_new_tokens} | machine
    stores = {task: SweepStore(root, fingerprint=fingerprint | {"n": len(rows[task])}, overwrite=cfg.overwrite,
                               gzip_samples=cfg.gzip_samples == "yes" or (cfg.gzip_samples == "auto"
                                                                          and len(rows[task]) > 100))
              for task in cfg.tasks}
    started = time.time()
    run_provenance = provenance()  # now: the run files this sweep writes into the tree would make it "+dirty" later
    print(f"sweep {root}")
    summaries = run_sweep(stores, rows, grid, lambda: load_model(model_path, cfg, add_mask=cfg.add_mask_token),
                          batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, style=cfg.prompt_style,
                          chat=cfg.chat_template, seed=cfg.seed, progress=cfg.progress, record=machine)
    meta = provenance_record(run_provenance, config=asdict(cfg), sweep_seconds_this_run=time.time() - started,
                             rows={task: len(r) for task, r in rows.items()})
    written = write_reports(root, summaries, meta=meta, plots=cfg.plots)
    print(f"wrote {', '.join(str(p.relative_to(root)) for p in written.values())} in {root}\n")
    print(written["summary"].read_text(), end="")
    return root
