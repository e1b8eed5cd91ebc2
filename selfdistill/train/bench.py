"""Cost of one training step, side by side in one run: plain next-token SFT, online distillation with a full
fine-tune (the teacher a frozen copy), and online distillation with gated LoRA (the teacher the same weights with the
adapters off, METHOD.md 1b), both as the trainer runs it (the real tokens once, ``train/shared_prefix.py``) and as
the packed step over all S slots twice (``distill_gated_packed``). Same model, same batch, same layout.

The distillation step is a student forward+backward plus a teacher forward over the same S slots, so its floor is
about 4/3 of an SFT step (forward ~1/3, backward ~2/3 of a training step). The gated step trains only the adapters
and the mask embedding (no optimizer state for the base, no teacher copy); packed, its backward still runs through
every position, while with the shared prefix only the mask slots carry grad. Each mode runs in its own spawned
process so its peak memory is its own: CUDA ``max_memory_allocated``, or on CPU the process's peak RSS (model
load included, the same for every mode).

    python scripts/bench_train.py                                          # small random Llama on CPU
    python scripts/bench_train.py --model smollm2-135m-instruct --steps 3  # the embedded real model
    python scripts/bench_train.py --hidden_size 1024 --num_layers 8 --batch_size 16 --device cuda

Writes ``results/bench_train/<timestamp>.json`` and ``.md`` with the command, commit and hardware.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

MODES = ("sft", "distill", "distill_gated", "distill_gated_packed")


@dataclass(kw_only=True)
class TrainBenchConfig:
    model: str | None = field(default=None, metadata={
        "help": "alias, checkpoint folder or hub id (selfdistill.load_model); default: a random model of the shape "
                "below"})
    modes: list[str] = field(default_factory=lambda: list(MODES), metadata={"help": f"of {', '.join(MODES)}"})
    arch: str = field(default="llama", metadata={"help": "llama or qwen3 (random model only)"})
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 4
    batch_size: int = 8
    seq_len: int = 160
    num_regions: int = 5
    k: int = 4
    lora_rank: int = field(default=16, metadata={"help": "distill_gated: adapter rank (alpha = 2 x rank)"})
    steps: int = 5
    warmup: int = 2
    dtype: str | None = field(default=None, metadata={
        "help": "compute dtype of the model (default: bfloat16 on CUDA, float32 on CPU)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager"})
    out: str = "results/bench_train"


def check_args(cfg: TrainBenchConfig) -> None:
    """Every option error as a ``ValueError`` naming it, before any model is built; resolves ``device``."""
    from selfdistill.models.loader import DTYPES, resolve_device, resolve_model_path, resolve_run_dtype
    from selfdistill.train.layout import region_geometry

    if cfg.arch not in ("llama", "qwen3") or cfg.attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"--arch must be llama or qwen3 and --attn_implementation sdpa or eager, got "
                         f"{cfg.arch!r}, {cfg.attn_implementation!r}")
    if not cfg.modes or set(cfg.modes) - set(MODES):
        raise ValueError(f"--modes must be some of {list(MODES)}, got {cfg.modes}")
    if cfg.steps < 1 or cfg.warmup < 0 or min(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.batch_size,
                                               cfg.lora_rank) < 1:
        raise ValueError("--steps, --vocab_size, --hidden_size, --num_layers, --batch_size, --lora_rank must be >= 1, "
                         "--warmup >= 0")
    if cfg.dtype is not None and cfg.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    region_geometry(cfg.seq_len, cfg.k, cfg.num_regions)  # the layout must fit
    if cfg.model is not None:
        resolve_model_path(cfg.model)  # a missing folder or wheel fails here, not in a spawned process
    cfg.device = resolve_device(cfg.device)
    cfg.dtype = resolve_run_dtype(cfg.dtype, device=cfg.device)


def parse_args(argv=None) -> TrainBenchConfig:
    from selfdistill.cli import parse_config

    return parse_config(TrainBenchConfig, argv, check=check_args, prog="bench_train.py",
                        description=__doc__.split("\n")[0])


def build_model(args: TrainBenchConfig):
    """The model to train, in train mode on ``args.device``."""
    import torch

    from selfdistill.models.loader import load_model
    from selfdistill.models.tiny import tiny_model

    if args.model is not None:
        model, _ = load_model(args.model, dtype=args.dtype, attn_implementation=args.attn_implementation)
    else:
        model = tiny_model(args.arch, attn_implementation=args.attn_implementation, dtype=getattr(torch, args.dtype),
                           vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                           num_heads=max(1, args.hidden_size // 64), num_kv_heads=max(1, args.hidden_size // 128),
                           max_positions=args.seq_len + 8)
    return model.to(args.device).train()


def make_step(mode: str, model, args: TrainBenchConfig):
    """``(step, trainable parameter count)``: one optimizer step of ``mode`` on a fixed random batch."""
    import torch

    from selfdistill.models.gated_lora import BaseModelView, GatedLoRAConfig, apply_gated_lora
    from selfdistill.train.distill_step import distill_step
    from selfdistill.train.layout import build_layout
    from selfdistill.train.trainer import frozen_teacher

    vocab = model.get_input_embeddings().weight.shape[0]
    mask_id = vocab - 1  # any id: the cost does not depend on which token is the mask
    teacher = None
    if mode == "distill":
        teacher = frozen_teacher(model)
    elif mode.startswith("distill_gated"):
        apply_gated_lora(model, GatedLoRAConfig(rank=args.lora_rank, alpha=2.0 * args.lora_rank), mask_token_id=mask_id)
        teacher = BaseModelView(model)
    layout = build_layout(args.seq_len, args.k, args.num_regions)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, vocab - 2, (args.batch_size, args.seq_len + 1), generator=gen).to(args.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step():
        if mode == "sft":
            loss = model(input_ids=raw[:, :-1], labels=raw[:, :-1]).loss
        else:
            loss = distill_step(model, teacher, raw, layout=layout, mask_token_id=mask_id,
                                shared_prefix=mode == "distill_gated").loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, sum(p.numel() for p in params)


def _measure(mode: str, args: TrainBenchConfig, queue) -> None:
    import torch

    from selfdistill.timing import clock

    device = torch.device(args.device)
    model = build_model(args)
    step, trainable = make_step(mode, model, args)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = clock(device)
    for _ in range(args.steps):
        step()
    seconds = (clock(device) - start) / args.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
    queue.put({"mode": mode, "seconds_per_step": seconds, "peak_memory_mib": peak,
               "trainable_params_m": trainable / 1e6, "params_m": sum(p.numel() for p in model.parameters()) / 1e6})


def report(results: dict, args: TrainBenchConfig, memory_kind: str) -> list[str]:
    """Markdown table lines: each mode's seconds per step and peak memory, and both as ratios to the first mode."""
    base = results[args.modes[0]]
    lines = [f"| mode | trainable (M) | s/step | x {args.modes[0]} | peak MiB ({memory_kind}) | x {args.modes[0]} |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in args.modes:
        r = results[m]
        lines.append(f"| {m} | {r['trainable_params_m']:.2f} | {r['seconds_per_step']:.3f} | "
                     f"{r['seconds_per_step'] / base['seconds_per_step']:.2f} | {r['peak_memory_mib']:.0f} | "
                     f"{r['peak_memory_mib'] / base['peak_memory_mib']:.2f} |")
    return lines


def run_bench_train(args: TrainBenchConfig) -> dict:
    from selfdistill.provenance import provenance
    from selfdistill.run_folder import RunFolder, provenance_markdown, provenance_record

    run_provenance = provenance()
    ctx = mp.get_context("spawn")
    results = {}
    for mode in args.modes:
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(mode, args, queue))
        proc.start()
        results[mode] = queue.get()
        proc.join()
    memory_kind = "CUDA max_memory_allocated" if args.device == "cuda" else "process peak RSS"
    ratios = {f"{m}_over_{args.modes[0]}": {
        "time": results[m]["seconds_per_step"] / results[args.modes[0]]["seconds_per_step"],
        "memory": results[m]["peak_memory_mib"] / results[args.modes[0]]["peak_memory_mib"]} for m in args.modes[1:]}
    record = provenance_record(run_provenance, settings=asdict(args), results=results, ratios=ratios,
                               memory_kind=memory_kind)
    lines = report(results, args, memory_kind)
    print("\n".join(lines))
    folder = RunFolder(args.out)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder.write_json(f"{stamp}.json", record, indent=2)
    model = args.model or f"random {args.arch}"
    folder.write_text(
        f"{stamp}.md", provenance_markdown(run_provenance) +
        f"Model: {model}, {results[args.modes[0]]['params_m']:.2f}M params, {asdict(args)}\n\n"
        + "\n".join(lines) + "\n")
    return record
