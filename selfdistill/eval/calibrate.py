"""Calibrating a model's mask-slot confidences (``scripts/calibrate.py``): collect, fit, report, ship.

1. **Collect.** Each dev prompt is decoded greedily (lossless ``verify``: identical to greedy in exact arithmetic,
   and faster). Then, at every position ``t`` of the completion, the decoder's own pass (the real tokens up to
   ``t`` followed by ``k_max - 1`` masks) is run for all ``t`` at once over one cache (:func:`slot_predictions`).
   Mask ``j`` of anchor ``t`` is slot ``j + 1``; its sample is (top-1 probability, argmax == the greedy token at
   that position). Prompts come from a suite's dev side (``gsm8k_dev``: held-out GSM8K *train* questions), never a
   test split.
2. **Fit** one isotonic curve per slot (:mod:`selfdistill.eval.calibration`).
3. **Report** ECE and precision at thresholds per slot, raw and calibrated; the calibrated numbers are
   *cross-fitted* (each half of the prompts mapped by the curve fitted on the other half), so they are held-out
   estimates. Reliability diagrams before/after in ``reliability.png``.
4. **Ship** (``save_to_model``): the map fitted on all prompts goes into the model's folder as
   ``mtp_calibration.json`` (:mod:`selfdistill.models.calibration`), tied to its weights; ConfAdapt reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfdistill.decode.registry import with_options
from selfdistill.eval.calibration import (METHODS, expected_calibration_error, fit_confidence_map, precision_at,
                                         reliability)
from selfdistill.models.attention import dense_mask_for
from selfdistill.models.gated_lora import trailing_masks
from selfdistill.run_folder import RunFolder, provenance_record

THRESHOLDS = (0.8, 0.9, 0.95)


def slot_predictions(model, ids: list[int], start: int, *, n_masks: int, mask_token_id: int,
                     anchors_per_pass: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder's pass at every anchor of one sequence, all anchors over one cache of the real tokens.

    Args:
        ids: prompt followed by its greedy completion (``N`` tokens).
        start: where the completion starts; anchors are ``start - 1 .. N - 2`` (``G`` of them).
        n_masks: ``K`` masks per anchor.

    Returns:
        ``conf`` float[G, K] top-1 probabilities, ``pred`` long[G, K] argmaxes and ``target`` long[G, K] the token
        at each mask's predicted position (-1 past the end): mask ``j`` (0-based) of anchor ``t`` predicts
        position ``t + j + 2``.
    """
    n = len(ids)
    if not 1 <= start < n:
        raise ValueError(f"start must be in 1..{n - 1} (a completion of at least one token), got {start}")
    device = model.device
    seq = torch.tensor(ids, device=device)
    with torch.no_grad():
        cache = model(input_ids=seq[None], use_cache=True).cache
        confs, preds = [], []
        for lo in range(start - 1, n - 1, anchors_per_pass):
            anchors = torch.arange(lo, min(lo + anchors_per_pass, n - 1), device=device)
            logits = _mask_pass(model, cache, anchors, n_real=n, n_masks=n_masks, mask_token_id=mask_token_id)
            probs = logits.float().softmax(dim=-1)
            conf, pred = probs.max(dim=-1)
            confs.append(conf)
            preds.append(pred)
    conf, pred = torch.cat(confs), torch.cat(preds)
    where = torch.arange(start - 1, n - 1, device=device)[:, None] + torch.arange(2, n_masks + 2, device=device)
    padded = torch.cat([seq, seq.new_full((n_masks + 2,), -1)])
    return conf.cpu(), pred.cpu(), padded[where].cpu()


def _mask_pass(model, cache, anchors: torch.Tensor, *, n_real: int, n_masks: int, mask_token_id: int):
    """Logits ``[G, K, V]`` of ``K`` masks after each anchor (masks see the real tokens up to their anchor and
    their own group's earlier masks, at positions ``t + 1 .. t + K``); the cache is cut back to the real tokens."""
    g, k = len(anchors), n_masks
    device = anchors.device
    of = torch.arange(g, device=device).repeat_interleave(k)
    real = torch.arange(n_real, device=device)[None, :] <= anchors[of][:, None]
    slot = torch.arange(g * k, device=device)
    own = (of[:, None] == of[None, :]) & (slot[None, :] <= slot[:, None])
    allowed = torch.cat([real, own], dim=1)
    mask = dense_mask_for(allowed, attn_implementation=model.config._attn_implementation, dtype=model.dtype)
    positions = (anchors[:, None] + 1 + torch.arange(k, device=device)).reshape(1, -1)
    inputs = torch.full((1, g * k), mask_token_id, device=device)
    try:
        with trailing_masks(model, g * k):
            out = model(input_ids=inputs, attention_mask=mask[None, None], position_ids=positions, cache=cache,
                        use_cache=True)
    finally:
        cache.crop(n_real - cache.get_seq_length())  # a negative count: drop the mask K/V
    return out.logits[0].reshape(g, k, -1)


def slot_samples(conf: torch.Tensor, pred: torch.Tensor, target: torch.Tensor) -> dict[int, tuple[list, list]]:
    """``{slot: (conf, correct)}`` from :func:`slot_predictions`' tensors (masks past the end left out)."""
    out = {}
    for j in range(conf.shape[1]):
        keep = target[:, j] >= 0
        out[j + 2] = (conf[keep, j].tolist(), (pred[keep, j] == target[keep, j]).tolist())
    return out


def merge(parts: list[dict[int, tuple[list, list]]]) -> dict[int, tuple[list, list]]:
    """Concatenate per-prompt samples slot by slot."""
    out: dict[int, tuple[list, list]] = {}
    for part in parts:
        for slot, (c, ok) in part.items():
            out.setdefault(slot, ([], []))
            out[slot][0].extend(c)
            out[slot][1].extend(ok)
    return out


def cross_fitted(parts: list[dict], *, method: str, bin_size: int) -> dict[int, tuple[list, list]]:
    """Calibrated held-out samples: the even prompts mapped by the map fitted on the odd ones, and vice versa."""
    halves = [merge(parts[0::2]), merge(parts[1::2])]
    out = []
    for held, fit_on in ((halves[0], halves[1]), (halves[1], halves[0])):
        cmap = fit_confidence_map(fit_on, method=method, bin_size=bin_size)
        mapped = {}
        for slot, (c, ok) in held.items():
            cols = torch.ones(len(c), slot)  # columns 0 .. slot-1; the last is this slot's
            cols[:, -1] = torch.tensor(c)
            mapped[slot] = (cmap.apply(cols)[:, -1].tolist(), ok)
        out.append(mapped)
    return merge(out)


def summary(raw: dict, calibrated: dict) -> dict:
    """Per slot: samples, share correct, ECE and precision at :data:`THRESHOLDS`, raw and (held-out) calibrated."""
    out = {}
    for slot in sorted(raw):
        row = {"n": len(raw[slot][0]), "correct": sum(raw[slot][1]) / max(len(raw[slot][1]), 1)}
        for label, (c, ok) in (("raw", raw[slot]), ("calibrated", calibrated[slot])):
            row[f"ece_{label}"] = expected_calibration_error(c, ok)
            for t in THRESHOLDS:
                row[f"precision_{label}_{t:g}"], row[f"n_{label}_{t:g}"] = precision_at(c, ok, t)
            row[f"reliability_{label}"] = reliability(c, ok)
        out[str(slot)] = row
    return out


def markdown_table(stats: dict) -> str:
    """The per-slot summary as a markdown table (ECE and precision at each threshold, raw -> calibrated)."""
    head = "| slot | n | greedy's token | ECE raw | ECE calibrated | " + " | ".join(
        f"precision at {t:g} raw (n) | calibrated (n)" for t in THRESHOLDS) + " |"
    lines = [head, "|" + "---:|" * (5 + 2 * len(THRESHOLDS))]

    def cell(p, n):
        return "-" if p is None else f"{p:.3f} ({n})"

    for slot, r in stats.items():
        cells = [slot, str(r["n"]), f"{r['correct']:.3f}", f"{r['ece_raw']:.3f}", f"{r['ece_calibrated']:.3f}"]
        for t in THRESHOLDS:
            cells += [cell(r[f"precision_raw_{t:g}"], r[f"n_raw_{t:g}"]),
                      cell(r[f"precision_calibrated_{t:g}"], r[f"n_calibrated_{t:g}"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_reliability(stats: dict, path: Path, *, title: str) -> Path:
    """Reliability diagrams, one panel per slot: raw and calibrated (held-out) precision against confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(stats))
    rows = -(-len(stats) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(stats):]:
        ax.set_visible(False)
    for ax, (slot, r) in zip(axes.flat, stats.items()):
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8, ls=":")
        for label, style in (("raw", dict(color="tab:red", marker="o")),
                             ("calibrated", dict(color="tab:blue", marker="s"))):
            table = r[f"reliability_{label}"]
            ax.plot([b["confidence"] for b in table], [b["precision"] for b in table], ms=4, lw=1,
                    label=f"{label} (ECE {r[f'ece_{label}']:.3f})", **style)
        ax.set(title=f"slot {slot}", xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    for row in axes:
        row[0].set_ylabel("share = greedy's token")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: Path, stats: dict, meta: dict, run_provenance: dict) -> None:
    """``calibration.json`` (stats + how they were made), ``calibration.md`` and ``reliability.png`` in ``out``."""
    folder = RunFolder(out)
    folder.write_record("calibration.json", run_provenance, meta=meta, slots=stats)
    folder.write_text(
        "calibration.md",
        f"# Mask-slot calibration of {meta['model']}\n\n`{run_provenance['command']}`\n\n"
        f"Commit {run_provenance['commit']}, {run_provenance['hardware']}, {meta['dtype']}; "
        f"{meta['prompts']} prompts of {meta['suite']}, k_max {meta['k_max']}, {meta['method']} fit. "
        "Calibrated columns are cross-fitted (each half of the prompts mapped by the fit on the other half).\n\n"
        + markdown_table(stats))
    plot_reliability(stats, out / "reliability.png", title=f"{meta['model']} on {meta['suite']}")


@with_options("k_max", note="default: the trained k_max")
@dataclass(kw_only=True)
class CalibrateConfig:
    model: str = field(default="smollm2-135m-mtp", metadata={"help": "alias, checkpoint or adapter folder"})
    suite: str = field(default="gsm8k_dev", metadata={
        "help": "dev prompts: gsm8k_dev (held-out GSM8K train questions) or synthetic_dev; never a test split"})
    limit: int = field(default=0, metadata={"help": "prompts (0 = the whole suite)"})
    max_new_tokens: int = 192
    chat_template: bool = field(default=False, metadata={"help": "wrap prompts in the tokenizer's chat template"})
    prompt_style: str = "zero_shot"
    method: str = field(default="platt", metadata={"help": "platt (a logistic map per slot) or isotonic"})
    bin_size: int = field(default=200, metadata={"help": "samples per isotonic bin"})
    dtype: str | None = field(default=None, metadata={
        "help": "float32, bfloat16, float16, float64; default: bfloat16 on CUDA, float32 on CPU (calibrate in the "
                "dtype you decode in)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:N"})
    batch_size: int = field(default=16, metadata={"help": "rows in flight for the greedy completions"})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    output_dir: str = field(default="results/calibration", metadata={"help": "parent of the report folder"})
    name: str | None = field(default=None, metadata={"help": "report folder name (default: from the model)"})
    save_to_model: bool = field(default=False, metadata={
        "help": "write mtp_calibration.json into the model's folder (ConfAdapt then uses it by default)"})


DEV_SUITES = ("gsm8k_dev", "synthetic_dev")


def check_config(cfg: CalibrateConfig) -> None:
    """Every option error as a ``ValueError`` naming it, before any model loads."""
    from selfdistill.cli import plain_folder_name
    from selfdistill.models.loader import resolve_device, resolve_model_path, resolve_run_dtype

    if cfg.method not in METHODS:
        raise ValueError(f"--method {cfg.method!r}: choose from {METHODS}")
    if cfg.suite not in DEV_SUITES:
        raise ValueError(f"--suite {cfg.suite!r}: calibrate on a dev suite {DEV_SUITES}, never a test split")
    for name in ("max_new_tokens", "bin_size", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.limit < 0 or cfg.num_threads < 0 or (cfg.k_max is not None and cfg.k_max < 2):
        raise ValueError("--limit and --num_threads must be >= 0 and --k_max >= 2")
    resolve_device(cfg.device)
    cfg.dtype = resolve_run_dtype(cfg.dtype, device=cfg.device)
    if cfg.name is not None:
        plain_folder_name(cfg.name)
    if cfg.save_to_model and not Path(resolve_model_path(cfg.model)).is_dir():
        raise ValueError(f"--save_to_model needs a local model folder; {cfg.model!r} is not one")


def run_calibration(cfg: CalibrateConfig) -> Path:
    """Collect, fit, report (and with ``save_to_model`` ship) a calibration; returns the report folder."""
    from selfdistill.decode.engine import generate_many
    from selfdistill.eval.evaluation import build_prompt
    from selfdistill.eval.task_suites import suite_rows
    from selfdistill.models.calibration import save_calibration
    from selfdistill.models.loader import load_model, resolve_model_path
    from selfdistill.models.mask_token import mask_token_id_from, trained_k_max_from
    from selfdistill.provenance import provenance

    check_config(cfg)
    run_provenance = provenance()  # now: a --save_to_model write into the tree would make it "+dirty" later
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    rows = suite_rows(cfg.suite, limit=cfg.limit or None)
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, calibration=False)
    mask_id, k_max = mask_token_id_from(model), cfg.k_max or trained_k_max_from(model)
    if mask_id is None or k_max is None:
        raise ValueError(f"{cfg.model} has no <mtp> mask token or no trained k_max (pass --k_max): not an MTP model")
    prompts = tokenizer([build_prompt(r, tokenizer, style=cfg.prompt_style, chat=cfg.chat_template) for r in rows],
                        add_special_tokens=not cfg.chat_template).input_ids
    out = generate_many(model, prompts, "verify", k_max=k_max, batch_size=cfg.batch_size,
                        max_new_tokens=cfg.max_new_tokens, eos_token_id=model.generation_config.eos_token_id)
    parts = [slot_samples(*slot_predictions(model, p + s, len(p), n_masks=k_max - 1, mask_token_id=mask_id))
             for p, s in zip(prompts, out.sequences) if s]
    raw = merge(parts)
    stats = summary(raw, cross_fitted(parts, method=cfg.method, bin_size=cfg.bin_size))
    name = cfg.name or f"{Path(str(cfg.model)).name}-{cfg.suite}"
    meta = {"model": cfg.model, "suite": cfg.suite, "prompts": len(parts), "k_max": k_max, "dtype": cfg.dtype,
            "method": cfg.method, "bin_size": cfg.bin_size, "max_new_tokens": cfg.max_new_tokens,
            "chat_template": cfg.chat_template}
    root = Path(cfg.output_dir) / name
    write_report(root, stats, meta, run_provenance)
    if cfg.save_to_model:
        cmap = fit_confidence_map(raw, method=cfg.method, bin_size=cfg.bin_size)
        record = provenance_record(run_provenance, **meta, report=str(root),
                                   ece_cross_fitted={s: r["ece_calibrated"] for s, r in stats.items()})
        save_calibration(resolve_model_path(cfg.model), cmap, record=record)
    return root
