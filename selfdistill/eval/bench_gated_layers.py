"""The recipe of ``scripts/bench_gated_layers.py``: gated-LoRA layers before and after a change, side by side in
one process: the shipped SmolLM2 adapter applied with today's layers and with the layers of an earlier commit (read
from git), each timed on the decoder's pass shape (``--real`` real tokens then ``--masks`` masks over a warm cache),
interleaved, with the bare one-token and all-real forwards beside them. Prints median ms and each relative to its
one-token forward, and checks that both give the same logits. With ``--profile N``, today's layers' all-real and
masked passes also run N times each under the profiler: which ops the masks add, and how much of the pass is not
in any op (Python and hooks).

    python scripts/bench_gated_layers.py --before 989898b --dtype bfloat16 --out results/bench_decode/gated_layers_epyc
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from selfdistill.models import gated_lora as gl
from selfdistill.models.loader import load_model
from selfdistill.models.smollm2 import adapter_path
from selfdistill.op_count import OpTime, op_times
from selfdistill.paths import REPO_ROOT
from selfdistill.provenance import provenance
from selfdistill.run_folder import RunFolder, provenance_record


def layers_at(commit: str):
    """``selfdistill/models/gated_lora.py`` as it was at ``commit``, imported as a module of its own."""
    source = subprocess.run(["git", "show", f"{commit}:selfdistill/models/gated_lora.py"], capture_output=True,
                            text=True, check=True, cwd=REPO_ROOT).stdout
    path = Path(tempfile.mkdtemp()) / "gated_lora_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("gated_lora_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def model_with(layers, dtype: str):
    """The base model with the shipped adapter applied by ``layers`` (a gated_lora module)."""
    from safetensors.torch import load_file

    model, _ = load_model("smollm2-135m-instruct", dtype=dtype)
    meta = gl.read_adapter_config(adapter_path())
    weights = load_file(str(adapter_path() / gl.WEIGHTS_FILE))
    rows = gl.pop_new_rows(weights)
    model.resize_token_embeddings(meta["vocab_size"], mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[meta["base_vocab_size"]:] = rows[gl.NEW_ROWS_KEY].to(model.dtype)
    config = layers.GatedLoRAConfig(rank=meta["rank"], alpha=meta["alpha"], targets=meta["targets"])
    layers.apply_gated_lora(model, config, mask_token_id=meta["mask_token_id"], base_vocab_size=meta["base_vocab_size"])
    layers.load_adapter_tensors(model, weights)
    return model.eval(), meta["mask_token_id"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_gated_layers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, help="commit whose gated_lora.py is the baseline")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--real", type=int, default=2)
    p.add_argument("--masks", type=int, default=4)
    p.add_argument("--context", type=int, default=150)
    p.add_argument("--repeats", type=int, default=25)
    p.add_argument("--num-threads", type=int, default=2)
    p.add_argument("--profile", type=int, default=0,
                   help="also profile today's layers' masked and all-real passes this many times each (op self times)")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def time_passes(models: dict, shapes: dict, *, context: int, repeats: int) -> dict[str, list[float]]:
    """``{"<layers> <shape>": [seconds]}``: each model's pass of each shape over a warm ``context``-token cache,
    interleaved round by round (the first round warms up and is dropped)."""
    caches, times = {name: warm_cache(model, context) for name, (model, _) in models.items()}, {}
    for rep in range(repeats + 1):
        for name, (model, _) in models.items():
            for shape, (ids, tail) in shapes.items():
                start = time.perf_counter()
                one_pass(model, caches[name], ids, context=context, tail=tail if name == "after" else None)
                seconds = time.perf_counter() - start
                if rep:
                    times.setdefault(f"{name} {shape}", []).append(seconds)
    return times


def warm_cache(model, context: int) -> DynamicCache:
    """A cache holding a fixed random ``context``-token prefix."""
    ctx = torch.randint(0, 1000, (1, context), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache(config=model.config)
    model(input_ids=ctx, cache=cache, use_cache=True, logits_to_keep=torch.tensor([0]))
    return cache


def one_pass(model, cache, ids: list[int], *, context: int, tail: int | None) -> None:
    """One decoder-shaped pass of ``ids`` over ``cache`` (cut back afterwards); ``tail``: the trailing masks declared
    to today's layers (``None``: nothing declared, as the earlier layers have no such call)."""
    ids_t, pos = torch.tensor([ids]), torch.arange(context, context + len(ids))[None]
    with gl.trailing_masks(model, tail) if tail is not None else contextlib.nullcontext():
        model(input_ids=ids_t, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=torch.arange(len(ids)))
    cache.crop(-len(ids))


def profile_passes(model, shapes: dict, timed_ms: dict, *, context: int, repeats: int) -> dict:
    """Today's layers' all-real and masked passes (the last two ``shapes``) under the profiler: per op, calls and
    self ms per pass in each, sorted by what the masks add; and per shape, the timed median against the ops' summed
    self time (the rest is Python, hooks and the profiler's own cost). Prints the top of the table."""
    cache, tables = warm_cache(model, context), {}
    for shape in list(shapes)[-2:]:
        ids, tail = shapes[shape]
        run = functools.partial(one_pass, model, cache, ids, context=context, tail=tail)
        run()
        tables[shape] = op_times(run, repeats=repeats)
    real_ops, masked_ops = tables.values()
    zero = OpTime(0.0, 0.0)
    names = sorted(set(real_ops) | set(masked_ops),
                   key=lambda n: real_ops.get(n, zero).self_us - masked_ops.get(n, zero).self_us)
    ops = [{"op": n, "calls_real": real_ops.get(n, zero).calls, "ms_real": real_ops.get(n, zero).self_us / 1e3,
            "calls_masked": masked_ops.get(n, zero).calls, "ms_masked": masked_ops.get(n, zero).self_us / 1e3}
           for n in names]
    totals = {shape: {"timed_ms": timed_ms[shape], "ops_self_ms": sum(t.self_us for t in table.values()) / 1e3}
              for shape, table in tables.items()}
    for shape, total in totals.items():
        print(f"profile {shape:22s} timed {total['timed_ms']:7.2f} ms, ops' self time {total['ops_self_ms']:7.2f} ms")
    for row in ops[:12]:
        print(f"  {row['op']:32s} {row['calls_real']:6.0f} {row['ms_real']:7.2f} ms -> "
              f"{row['calls_masked']:6.0f} {row['ms_masked']:7.2f} ms")
    return {"repeats": repeats, "totals": totals, "ops": ops}


def run_bench_gated_layers(argv=None) -> dict:
    """Parse ``argv``, time both layer versions, print the table and write ``<out>/<dtype>.json``."""
    args = parse_args(argv)
    record = provenance()
    torch.set_num_threads(args.num_threads)
    models = {"after": model_with(gl, args.dtype), "before": model_with(layers_at(args.before), args.dtype)}
    mask = models["after"][1]
    width = args.real + args.masks
    shapes = {"w1": ([5], 0), f"w{width} real": (list(range(5, 5 + width)), 0),
              f"{args.real} real + {args.masks} masks": (list(range(5, 5 + args.real)) + [mask] * args.masks,
                                                         args.masks)}
    with torch.no_grad():
        times = time_passes(models, shapes, context=args.context, repeats=args.repeats)
        probe = torch.tensor([shapes[list(shapes)[-1]][0]])
        diff = (models["after"][0](probe).logits.float() - models["before"][0](probe).logits.float()).abs().max()
    rows = []
    for key, values in times.items():
        one = statistics.median(times[f"{key.split()[0]} w1"])
        rows.append({"layers": key.split()[0], "shape": key.split(" ", 1)[1], "ms": 1e3 * statistics.median(values),
                     "ratio_to_w1": statistics.median(values) / one})
        print(f"{args.dtype} {key:28s} {rows[-1]['ms']:8.2f} ms  x{rows[-1]['ratio_to_w1']:.2f}")
    print(f"max |after - before| logits: {diff.item():.3g}")
    extra = {}
    if args.profile:
        timed = {row["shape"]: row["ms"] for row in rows if row["layers"] == "after"}
        with torch.no_grad():
            extra["profile"] = profile_passes(models["after"][0], shapes, timed, context=args.context,
                                              repeats=args.profile)
    out = provenance_record(record, args={k: str(v) for k, v in vars(args).items()}, rows=rows,
                            max_logit_difference=diff.item(), **extra)
    RunFolder(args.out).write_json(f"{args.dtype}.json", out)
    return out
