"""The device check (``scripts/device_check.sh``): what a GPU machine must show before the project claims to run on
one. Each part writes a JSON record into ``--out``; the shell script runs them and the training commands.

- ``tree``: the size of what the device tool sends (git's tracked and untracked-not-ignored files), under 64 MiB;
- ``lossless``: the tiny student on the device in float64 and bf16: verify/quadratic/hedged against ``generate``
  (equal in float64; in bf16 the agreement is reported beside bf16 greedy's own agreement with float32 greedy),
  and a batch against its rows decoded one at a time;
- ``gated_pass``: a random SmolLM2-shaped Llama with gated LoRA (r 16, all seven projections) in bf16: the pass
  with masks against a one-token and an all-real pass of the same width, timed, with and without the adapter, and
  the kernels each launches (``torch.profiler``, CUDA activity).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from selfdistill.paths import REPO_ROOT
from selfdistill.run_folder import RunFolder

ROOT = REPO_ROOT
TREE_LIMIT = 64 << 20
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3,
                     intermediate_size=1536, tie_word_embeddings=True)


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the files the device tool sends: tracked, and untracked but not ignored."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def lossless(device: str) -> dict:
    from selfdistill.decode.decoder import mtp_generate
    from selfdistill.models.loader import load_model

    out = {}
    for dtype in ("float64", "bfloat16", "float32"):
        model, tok = load_model("tiny-student", dtype=dtype, device=device)
        prompts = [tok(f"Question: Tom has {i} apples and gets {i + 3} more. How many?\nAnswer:",
                       add_special_tokens=False).input_ids for i in range(6)]
        greedy = [_generate(model, p, device) for p in prompts]
        row = {"greedy": greedy}
        for strategy in ("verify", "quadratic", "hedged"):
            got = mtp_generate(model, prompts, strategy=strategy, k_max=4, max_new_tokens=32, eos_token_id=[])
            alone = [mtp_generate(model, [p], strategy=strategy, k_max=4, max_new_tokens=32,
                                  eos_token_id=[]).sequences[0] for p in prompts]
            row[strategy] = {"equal_to_generate": sum(a == b for a, b in zip(got.sequences, greedy)),
                             "batched_equals_alone": sum(a == b for a, b in zip(got.sequences, alone)),
                             "tokens_per_forward": statistics.fmean(got.tokens_per_forward)}
        out[dtype] = row
    floor = sum(a == b for a, b in zip(out["bfloat16"]["greedy"], out["float32"]["greedy"]))
    for dtype in out:
        del out[dtype]["greedy"]
    return out | {"bf16_greedy_equal_to_fp32_greedy": floor, "prompts": 6}


def _generate(model, prompt: list[int], device: str) -> list[int]:
    ids = torch.tensor([prompt], device=device)
    out = model.generate(ids, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def gated_pass(device: str, repeats: int = 30) -> dict:
    from transformers import DynamicCache

    from selfdistill.models import gated_lora as gl
    from selfdistill.models.mask_token import mask_token_id_from
    from selfdistill.models.tiny import tiny_model
    from selfdistill.timing import clock

    model = tiny_model("llama", dtype=torch.bfloat16, max_positions=4096, **SMOLLM2_SHAPE).to(device)
    gl.apply_gated_lora(model, gl.GatedLoRAConfig(rank=16, alpha=32.0), mask_token_id=mask_token_id_from(model))
    mask = mask_token_id_from(model)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 1000, (1, 150), device=device), cache=cache, use_cache=True,
              logits_to_keep=torch.tensor([0], device=device))
    shapes = {"w1": ([5], 0), "w6 real": ([5, 6, 7, 8, 9, 10], 0), "2 real + 4 masks": ([5, 6] + [mask] * 4, 4)}
    out = {}
    for name, (ids, tail) in shapes.items():
        ids_t = torch.tensor([ids], device=device)
        pos = torch.arange(150, 150 + len(ids), device=device)[None]

        def one():
            with gl.trailing_masks(model, tail):
                model(input_ids=ids_t, position_ids=pos, cache=cache, use_cache=True,
                      logits_to_keep=torch.arange(len(ids), device=device))
            cache.crop(-len(ids))
        times = []
        with torch.no_grad():
            for _ in range(repeats + 3):
                start = clock(device)
                one()
                times.append(clock(device) - start)
            out[name] = {"ms": 1e3 * statistics.median(times[3:]), "kernels": _kernels(one, device)}
    base = out["w1"]["ms"]
    return {k: v | {"ratio_to_w1": v["ms"] / base} for k, v in out.items()} | {"shape": "SmolLM2-135M, r 16"}


def _kernels(fn, device: str) -> int | None:
    """CUDA kernels one call launches (``None`` on a CPU)."""
    if not device.startswith("cuda"):
        return None
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


PARTS = {"tree": lambda device: {"bytes": tree_bytes(), "limit": TREE_LIMIT, "ok": tree_bytes() < TREE_LIMIT},
         "lossless": lossless, "gated_pass": gated_pass}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="one part of scripts/device_check.sh")
    p.add_argument("part", choices=sorted(PARTS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.part != "tree" and args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch sees no CUDA device")
    start = time.perf_counter()
    record = PARTS[args.part](args.device) | {"seconds": round(time.perf_counter() - start, 1), "device": args.device,
                                               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available()
                                               else None, "torch": torch.__version__}
    RunFolder(args.out).write_json(f"{args.part}.json", record)
    print(json.dumps(record))
    return 0 if record.get("ok", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
