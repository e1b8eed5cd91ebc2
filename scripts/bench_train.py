"""Cost of one online-distillation step vs one plain next-token SFT step, same model, same batch, one run.

The distillation step is a student forward+backward plus a teacher forward over the same S slots, so its floor is
about 4/3 of an SFT step (forward ~1/3, backward ~2/3 of a training step). Each mode runs in its own spawned
process so its peak memory is its own: CUDA ``max_memory_allocated``, or on CPU the process's peak RSS.

    python scripts/bench_train.py                                   # small random Llama on CPU
    python scripts/bench_train.py --hidden_size 1024 --num_layers 8 --batch_size 16 --device cuda

Writes ``results/bench_train/<timestamp>.json`` and ``.md`` with the command and hardware.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

MODES = ("sft", "distill")


@dataclass(kw_only=True)
class TrainBenchConfig:
    arch: str = field(default="llama", metadata={"help": "llama or qwen3"})
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 4
    batch_size: int = 8
    seq_len: int = 160
    num_regions: int = 5
    k: int = 4
    steps: int = 5
    warmup: int = 2
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager"})
    out: str = "results/bench_train"


def check_args(cfg: TrainBenchConfig) -> None:
    """Every option error as a ``ValueError`` naming it, before any model is built; resolves ``device``."""
    from selfdistill.models.loader import resolve_device
    from selfdistill.train.layout import region_geometry

    if cfg.arch not in ("llama", "qwen3") or cfg.attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"--arch must be llama or qwen3 and --attn_implementation sdpa or eager, got "
                         f"{cfg.arch!r}, {cfg.attn_implementation!r}")
    if cfg.steps < 1 or cfg.warmup < 0 or min(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.batch_size) < 1:
        raise ValueError("--steps, --vocab_size, --hidden_size, --num_layers, --batch_size must be >= 1, --warmup >= 0")
    region_geometry(cfg.seq_len, cfg.k, cfg.num_regions)  # the layout must fit
    cfg.device = resolve_device(cfg.device)


def parse_args(argv=None) -> TrainBenchConfig:
    from selfdistill.cli import parse_config

    return parse_config(TrainBenchConfig, argv, check=check_args, prog="bench_train.py",
                        description=__doc__.split("\n")[0])


def _measure(mode: str, args: TrainBenchConfig, queue) -> None:
    import torch

    from selfdistill.train.distill_step import distill_step
    from selfdistill.train.trainer import frozen_teacher
    from selfdistill.train.layout import build_layout
    from selfdistill.models.tiny import tiny_model

    device = torch.device(args.device)
    model = tiny_model(args.arch, attn_implementation=args.attn_implementation, dtype=torch.float32,
                       vocab_size=args.vocab_size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                       num_heads=max(1, args.hidden_size // 64), num_kv_heads=max(1, args.hidden_size // 128),
                       max_positions=args.seq_len + 8).to(device).train()
    teacher = frozen_teacher(model).to(device) if mode == "distill" else None
    mask_id = args.vocab_size - 1
    layout = build_layout(args.seq_len, args.k, args.num_regions)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, args.vocab_size - 2, (args.batch_size, args.seq_len + 1), generator=gen).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        if mode == "sft":
            loss = model(input_ids=raw[:, :-1], labels=raw[:, :-1]).loss
        else:
            loss = distill_step(model, teacher, raw, layout=layout, mask_token_id=mask_id).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / args.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
    queue.put({"mode": mode, "seconds_per_step": seconds, "peak_memory_mib": peak,
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6})


def hardware(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads, torch {torch.__version__}"


def main(args: TrainBenchConfig) -> dict:
    ctx = mp.get_context("spawn")
    results = {}
    for mode in MODES:
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(mode, args, queue))
        proc.start()
        results[mode] = queue.get()
        proc.join()
    ratio_t = results["distill"]["seconds_per_step"] / results["sft"]["seconds_per_step"]
    ratio_m = results["distill"]["peak_memory_mib"] / results["sft"]["peak_memory_mib"]
    memory_kind = "CUDA max_memory_allocated" if args.device == "cuda" else "process peak RSS"
    record = {"command": " ".join([sys.executable] + sys.argv), "hardware": hardware(args.device),
              "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "settings": asdict(args),
              "results": results, "time_ratio_distill_over_sft": ratio_t, "memory_ratio_distill_over_sft": ratio_m,
              "memory_kind": memory_kind}
    lines = [f"| mode | s/step | peak MiB ({memory_kind}) |", "|---|---|---|"]
    lines += [f"| {m} | {results[m]['seconds_per_step']:.4f} | {results[m]['peak_memory_mib']:.0f} |" for m in MODES]
    lines += ["", f"distill/sft time ratio: {ratio_t:.2f} (floor ~1.33); memory ratio: {ratio_m:.2f}"]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (out / f"{stamp}.json").write_text(json.dumps(record, indent=2))
    (out / f"{stamp}.md").write_text(f"Command: `{record['command']}`\n\nHardware: {record['hardware']}\n\n"
                                     f"Model: {results['sft']['params_m']:.2f}M params, {asdict(args)}\n\n"
                                     + "\n".join(lines) + "\n")
    return record


if __name__ == "__main__":
    main(parse_args())
