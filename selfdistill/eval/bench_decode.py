"""Decoding speed benchmark: ``model.generate`` (greedy) vs the multi-token decoder, side by side.

Same process, same prompts, same ``max_new_tokens``, each at batch 1 and batch 16 (``--batch-sizes``): every
strategy of the registry at its bench points (:func:`selfdistill.eval.measured.bench_settings`: ``generate``
greedy in static batches, ``generate_cb`` = transformers' own continuous batching, static k=1..4, ConfAdapt
0.99/0.9/0.7, verify and quadratic, and the adaptive mask count ``mask_margin=2``; ``--k_max``/``--mask_margin``
replace the adaptive ones' values with the k a model was trained to), all decoded through
:func:`selfdistill.decode.engine.generate_many` (continuous batching: ``B`` rows in flight, a finished row's slot
refilled at once), the path the sweep and lm-eval use. Prints tokens/s, tokens per forward (mean/std over rows, and
pooled), the ratio of tokens/s to ``generate`` and to ``generate_cb`` at the same batch size, and the share of the
decoder's wall time spent outside model forwards (Python bookkeeping, cache cropping, acceptance). Each setting is
timed ``--repeats`` times, interleaved with the others, and the fastest run is reported.

Why a decoder can fall short of its tokens per forward: a pass that feeds w tokens (the accepted chunk plus the
masks) costs more than a one-token pass wherever the hardware is not purely latency-bound. So the script also
times the bare model forward (no decoder around it; :mod:`selfdistill.decode.forward_cost`) for w = 1..24 new
tokens on a warm KV cache at each batch size (``forward_cost.csv``, with the model's linear layers alone timed
beside it), and reports per setting
``forward_only_ratio``: its tokens per second of forward time over static k=1's, the speedup a decoder with zero
bookkeeping would get on this hardware; ``pass_cost_ratio``: its forward time per batched model call over static
k=1's; ``tokens_per_forward_pooled``: all tokens over all row-passes (what wall time follows); and
``speedup_per_tpf``: ``ratio_to_generate`` over that pooled tokens per forward.

Writes ``bench.csv``, ``forward_cost.csv`` and ``bench.json`` (with command, commit, hardware, versions) into
``--out``. Never asserts on timing.

Launch:
    .venv/bin/python scripts/bench_decode.py --limit 4 --max-new-tokens 32 --out results/bench_decode/
    .venv/bin/python scripts/bench_decode.py --model CKPT_DIR --prompts prompts.jsonl --out results/bench_decode/
    .venv/bin/python scripts/bench_decode.py --model tiny-student --suite synthetic --out results/bench_decode/x
    .venv/bin/python scripts/bench_decode.py --model smollm2-135m-mtp --k_max 5 --mask_margin 2 \
        --only static_k3,conf_adapt_0.9_kmax5_margin2,verify_kmax5_margin2 --out results/bench_decode/y
    .venv/bin/python scripts/bench_decode.py --model smollm2-135m-mtp --suite gsm8k --chat_template true \
        --k_max 5 --mask_margin 2 --dtype bfloat16 --out results/bench_decode/z  # the sweep's prompts, bf16
    .venv/bin/python scripts/bench_decode.py --random-llama 256,6 --out results/bench_decode/  # untrained model
    # on a GPU: a Llama-3.2-1B-shaped random model in bf16 (the GPU's name goes into the --out folder by hand)
    python scripts/bench_decode.py --random-llama llama-3.2-1b --dtype bfloat16 --device cuda --out DIR
Default model: the shipped tiny teacher (:func:`selfdistill.models.tiny.teacher_path`) if present, else a random
tiny Llama. A checkpoint without the ``<mtp>`` mask id gets one (``add_mask_token``) so masks can be fed; the
numbers then measure speed only (an untrained model predicts poorly at masks).
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfdistill.decode.forward_cost import BASELINE, FORWARD_BASELINE, add_ratios, forward_cost, ops_columns, pass_ops
from selfdistill.decode.registry import with_options
from selfdistill.eval.measured import bench_settings
from selfdistill.models.loader import DTYPES, resolve_device, resolve_run_dtype
from selfdistill.run_folder import RunFolder
from selfdistill.timing import clock


PROMPT_FIELDS = ("prompt", "text", "question")
_TEMPLATES = [
    "Question: {a} apples are in a basket and {b} more are added. How many apples are there?\nAnswer:",
    "Question: A train travels {a} km in the morning and {b} km in the afternoon. How far does it go?\nAnswer:",
    "Question: Sam has {a} coins and gives away {b}. How many coins are left?\nAnswer:",
    "Question: A box holds {a} rows of {b} pencils. How many pencils are in the box?\nAnswer:",
]


@with_options("k_max", "mask_margin", note="replacing the bench points' for every setting that takes it; "
                                            "use the k the model was trained to")
@dataclass(kw_only=True)
class BenchConfig:
    model: str | None = field(default=None, metadata={
        "help": "checkpoint folder or alias (default: the shipped tiny teacher)"})
    random_llama: str | None = field(default=None, metadata={
        "help": "HIDDEN,LAYERS | llama-3.2-1b: benchmark a random Llama of this shape instead (vocab "
                "--random-vocab), or of the shape of Llama-3.2-1B (its own vocabulary)"})
    random_vocab: int = 8192
    prompts: Path | None = field(default=None, metadata={
        "help": "JSONL file; each line has a 'prompt' (or 'text'/'question') field"})
    suite: str | None = field(default=None, metadata={
        "help": "take zero-shot prompts from this task suite instead (e.g. synthetic, bbh_learnt: what the tiny "
                "models were trained on), spread evenly over its subtasks"})
    chat_template: bool = field(default=False, metadata={
        "help": "send each prompt as one user turn of the model's chat template (as pareto.py --chat_template)"})
    limit: int = field(default=32, metadata={"help": "number of prompts"})
    max_new_tokens: int = 64
    batch_sizes: str = field(default="1,16", metadata={"help": "comma-separated positive batch sizes"})
    only: str | None = field(default=None, metadata={
        "help": "comma-separated subset of strategy names (default: all); generate and static_k1, the baselines "
                "of the ratios, always run"})
    repeats: int = field(default=3, metadata={
        "help": "time each setting this many times, interleaved with the others; report the fastest"})
    forward_cost_repeats: int = field(default=30, metadata={
        "help": "timed forwards per width for forward_cost.csv (0 = skip that table)"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})
    dtype: str | None = field(default=None, metadata={
        "help": f"one of {[d for d in DTYPES if d != 'auto']}; default: bfloat16 on CUDA, float32 on CPU"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda:N"})
    out: Path = Path("results/bench_decode")


def check_args(cfg: BenchConfig) -> None:
    """Every option error as a ``ValueError``/``OSError`` naming it, before any model loads; resolves ``device``."""
    from selfdistill.cli import check_output_folder
    from selfdistill.models.loader import resolve_model_path

    names = [n for n, _ in bench_settings(k_max=cfg.k_max, mask_margin=cfg.mask_margin)]
    unknown = set(cfg.only.split(",")) - set(names) if cfg.only else set()
    if unknown:
        raise ValueError(f"--only: unknown setting(s) {sorted(unknown)}; choose from {names}")
    if cfg.random_llama:
        random_llama_shape(cfg.random_llama, vocab_size=cfg.random_vocab)
        if cfg.chat_template:
            raise ValueError("--chat_template needs the model's tokenizer; --random-llama has none")
    elif cfg.model is not None:
        resolve_model_path(cfg.model)
    batch_sizes(cfg)
    if min(cfg.limit, cfg.max_new_tokens, cfg.repeats) < 1 or cfg.forward_cost_repeats < 0:
        raise ValueError("--limit, --max-new-tokens and --repeats must be >= 1, --forward-cost-repeats >= 0")
    cfg.device = resolve_device(cfg.device)
    if cfg.dtype is not None and (cfg.dtype not in DTYPES or cfg.dtype == "auto"):
        raise ValueError(f"--dtype {cfg.dtype!r}: choose from {[d for d in DTYPES if d != 'auto']}")
    cfg.dtype = resolve_run_dtype(cfg.dtype, device=cfg.device)
    if cfg.prompts is not None:
        prompt_texts(cfg.prompts)
    check_output_folder(cfg.out, flag="--out")


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    from selfdistill.cli import parse_config

    return parse_config(BenchConfig, argv, check=check_args, prog="bench_decode.py",
                        description=__doc__.split("\n\n")[0])


def batch_sizes(cfg: BenchConfig) -> list[int]:
    parts = cfg.batch_sizes.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--batch-sizes takes comma-separated positive integers, got {cfg.batch_sizes!r}")
    return [int(p) for p in parts]


def prompt_texts(path: Path) -> list[str]:
    """The prompt of each row of a JSONL file: its 'prompt', else 'text', else 'question' field."""
    from selfdistill.data.benchmarks.source import read_records

    texts = []
    for i, row in enumerate(read_records(Path(path)), 1):
        text = next((row[k] for k in PROMPT_FIELDS if k in row), None)
        if not isinstance(text, str) or not text:
            raise ValueError(f"{path}: row {i} has no non-empty text in any of the fields {PROMPT_FIELDS}")
        texts.append(text)
    return texts


def random_llama_shape(spec: str, *, vocab_size: int) -> dict:
    """``tiny_model`` options for ``--random-llama``: ``"HIDDEN,LAYERS"`` (64-dim heads, 2 query heads per KV head,
    MLP 2x hidden) or ``"llama-3.2-1b"`` (:data:`selfdistill.models.tiny.LLAMA_3_2_1B_SHAPE`)."""
    from selfdistill.models.tiny import LLAMA_3_2_1B_SHAPE

    if spec == "llama-3.2-1b":
        return dict(LLAMA_3_2_1B_SHAPE)
    parts = spec.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--random-llama takes HIDDEN,LAYERS (two positive ints) or llama-3.2-1b, got {spec!r}")
    hidden, layers = (int(p) for p in parts)
    return dict(hidden_size=hidden, num_layers=layers, vocab_size=vocab_size, num_heads=max(1, hidden // 64),
                num_kv_heads=max(1, hidden // 128))


def load_model(cfg):
    """Returns ``(model, tokenizer_or_None, description)``; the model carries a mask id."""
    dtype = getattr(torch, cfg.dtype)
    if cfg.random_llama:
        from selfdistill.models.tiny import tiny_model

        shape = random_llama_shape(cfg.random_llama, vocab_size=cfg.random_vocab)
        model = tiny_model("llama", dtype=dtype, max_positions=4096, **shape)
        described = " ".join(f"{k}={v}" for k, v in shape.items())
        return model.to(cfg.device), None, f"random llama ({cfg.random_llama}) {described}"
    path = cfg.model
    if path is None:
        try:
            from selfdistill.models.tiny import teacher_path

            path = str(teacher_path())
        except (ImportError, FileNotFoundError) as err:
            print(f"no shipped tiny teacher ({err}); using a random tiny Llama", file=sys.stderr)
            cfg.random_llama = "256,6"
            return load_model(cfg)
    from selfdistill.models.loader import load_model as load_checkpoint

    # aliases resolved there; an untrained <mtp> is added to a model without one (speed does not need a trained one)
    model, tokenizer = load_checkpoint(path, dtype=dtype, device=cfg.device, add_mask_token=True)
    return model, tokenizer, path


def load_prompts(cfg, tokenizer, vocab_size: int) -> list[list[int]]:
    if cfg.suite is not None:
        from selfdistill.data.prompts import render_prompt
        from selfdistill.eval.task_suites import suite_rows

        rows = suite_rows(cfg.suite, limit=cfg.limit)
        texts = [render_prompt(row) for row in rows[::max(1, len(rows) // cfg.limit)][:cfg.limit]]
    elif cfg.prompts is not None:
        texts = prompt_texts(cfg.prompts)[:cfg.limit]
    else:
        texts = [_TEMPLATES[i % len(_TEMPLATES)].format(a=3 + 7 * i % 50, b=2 + 5 * i % 30) for i in range(cfg.limit)]
    if cfg.chat_template:
        from selfdistill.data.prompts import apply_chat_template

        texts = [apply_chat_template(t, tokenizer) for t in texts]
    if tokenizer is None:
        g = torch.Generator().manual_seed(0)
        # Random ids (avoiding the top few special ids) with the lengths the texts would roughly have.
        return [torch.randint(0, vocab_size - 8, (8 + len(t) // 6,), generator=g).tolist() for t in texts]
    return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def bench_one(model, prompts, name, unit, batch_size, max_new_tokens, pad_id, device) -> dict:
    """One timed decode of all prompts with one setting, ``batch_size`` rows in flight, through the same path as
    the sweep and lm-eval (:func:`selfdistill.decode.engine.generate_many`)."""
    from selfdistill.decode.engine import generate_many

    start = clock(device)
    out = generate_many(model, prompts, unit, batch_size=batch_size, max_new_tokens=max_new_tokens,
                        pad_token_id=pad_id, profile=not unit.baseline)
    seconds = clock(device) - start
    timing = out.timings
    nan = float("nan")
    precision = out.precision()
    return {"strategy": name, "batch_size": batch_size, "prompts": len(prompts)} | out.speed(seconds=seconds) | {
        "draft_precision": precision["draft_precision"], "draft_checked": precision["draft_checked"],
        # overhead: the decoder's wall time outside model forwards (bookkeeping, cache ops, acceptance)
        "overhead_share": (timing["total_s"] - timing["forward_s"]) / timing["total_s"] if timing else nan,
        "forward_seconds": timing.get("forward_s", nan),
        "model_calls": out.model_calls if not unit.baseline else nan,
    }


def run_bench_decode(cfg) -> list[dict]:
    from selfdistill.provenance import provenance
    from selfdistill.run_folder import provenance_record

    run_provenance = provenance()  # now: the outputs this run writes into the tree would make it "+dirty" later
    torch.manual_seed(0)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model, tokenizer, desc = load_model(cfg)
    vocab = model.get_input_embeddings().weight.shape[0]
    prompts = load_prompts(cfg, tokenizer, vocab)
    pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    only = set(cfg.only.split(",")) if cfg.only else None
    settings = bench_settings(k_max=cfg.k_max, mask_margin=cfg.mask_margin)
    chosen = [(n, u) for n, u in settings if only is None or n in only or n in (BASELINE, FORWARD_BASELINE)]

    # Warm-up (allocator, kernels, lazy imports) so the first measured row is not penalised.
    for name, unit in chosen:
        bench_one(model, prompts[:1], name, unit, 1, 4, pad_id, cfg.device)

    results, costs = [], []
    with torch.no_grad():
        # operation counts per pass (batch 1, first prompt): deterministic, the GPU-side proxy of a pass's cost
        ops = {name: pass_ops(model, prompts[0], unit, pad_token_id=pad_id) for name, unit in chosen}
        for bs in batch_sizes(cfg):
            best = fastest_runs(model, prompts, chosen, batch_size=bs, cfg=cfg, pad_id=pad_id)
            for name, unit in chosen:
                row = add_ratios(best[name], best, baseline=unit.baseline) | ops_columns(ops, name) | {
                    "repeats": cfg.repeats}
                results.append(row)
                print(describe(row), flush=True)
            if cfg.forward_cost_repeats > 0:
                context = round(statistics.fmean(map(len, prompts))) + cfg.max_new_tokens // 2
                rows = forward_cost(model, batch_size=bs, context=context, repeats=cfg.forward_cost_repeats,
                                    device=cfg.device)
                costs += rows
                print(f"bs={bs:<3d} bare forward, {context} cached tokens: "
                      + "  ".join(f"w={r['new_tokens']}: {r['ms']:.2f} ms (x{r['ratio_to_w1']:.2f}; linears "
                                  f"{r['linear_ms']:.2f} ms, x{r['linear_ratio_to_w1']:.2f})" for r in rows),
                      flush=True)
    meta = {"model": desc, "device": cfg.device, "dtype": cfg.dtype, "max_new_tokens": cfg.max_new_tokens,
            "args": {k: str(v) for k, v in vars(cfg).items()}}
    write_outputs(cfg.out, results, costs, provenance_record(run_provenance, meta=meta))
    return results


def fastest_runs(model, prompts, chosen, *, batch_size: int, cfg, pad_id: int) -> dict[str, dict]:
    """``{name: row}``: each setting's fastest of ``cfg.repeats`` timed decodes at ``batch_size``. Repeats are
    interleaved across settings so slow phases of a shared machine hit all of them."""
    best: dict[str, dict] = {}
    for _ in range(max(1, cfg.repeats)):
        for name, unit in chosen:
            row = bench_one(model, prompts, name, unit, batch_size, cfg.max_new_tokens, pad_id, cfg.device)
            if name not in best or row["seconds"] < best[name]["seconds"]:
                best[name] = row
    return best


def describe(row: dict) -> str:
    """One printed line per (batch size, setting)."""
    return (f"bs={row['batch_size']:<3d} {row['strategy']:<28s} tok/s={row['tokens_per_second']:9.1f} "
            f"tpf={row['tokens_per_forward_mean']:5.2f}±{row['tokens_per_forward_std']:.2f} "
            f"pooled {row['tokens_per_forward_pooled']:5.2f} "
            f"x{row['ratio_to_generate']:.2f} vs generate x{row['ratio_to_generate_cb']:.2f} vs generate_cb "
            f"overhead={row['overhead_share']:.0%}  "
            f"forward-only x{row['forward_only_ratio']:.2f} vs k=1  "
            f"pass cost x{row['pass_cost_ratio']:.2f} (ops x{row['ops_ratio_to_generate']:.2f})  "
            f"draft precision {row['draft_precision']:.2f} (n={row['draft_checked']})  "
            f"speedup/tpf {row['speedup_per_tpf']:.2f}")


def write_outputs(out: Path, results: list[dict], costs: list[dict], record: dict) -> None:
    """``bench.csv``, ``forward_cost.csv`` (when timed) and ``bench.json`` (``record`` with the rows) into ``out``."""
    folder = RunFolder(out)
    for name, rows in (("bench.csv", results), ("forward_cost.csv", costs)):
        if rows:
            folder.write_csv(name, rows)
    folder.write_json("bench.json", record | {"results": results, "forward_cost": costs}, indent=2)
    print(f"wrote {out / 'bench.csv'} and {out / 'bench.json'}")
