"""What a multi-token pass costs on this hardware: the bare cached forward timed at widths ``w = 1..24``.

A decoder that emits ``t`` tokens per forward is ``t`` times faster than one-token decoding only where a pass that
feeds ``w`` tokens costs no more than a one-token pass (latency-bound hardware: a GPU, a CPU with AMX/AVX512-BF16
in bf16). :func:`forward_cost` measures that cost, with no decoder around the model, so ``scripts/bench_decode.py``
can report how much of a strategy's tokens per forward the hardware lets become speed (:func:`add_ratios`: a
setting's timings against ``generate`` and static k=1 of the same batch size).
"""

from __future__ import annotations

import statistics

import torch

from selfdistill.op_count import count_ops
from selfdistill.timing import clock

#: The widths (new tokens per row) a bare forward is timed at.
FORWARD_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24)
#: The baselines of the ratios, always run: plain generate (ratio_to_generate) and static k=1 (the forward ratios).
BASELINE, FORWARD_BASELINE, CONTINUOUS_BASELINE = "generate", "static_k1", "generate_cb"


def forward_cost(model, *, batch_size: int, context: int, widths=FORWARD_WIDTHS, repeats: int = 30,
                 device="cpu") -> list[dict]:
    """Median wall time of one bare cached forward that feeds ``w`` new tokens per row, for each ``w``.

    The cache holds ``context`` random tokens per row (no padding) and is cropped back after each forward. Each
    width is timed in runs of consecutive forwards, as a decoder repeats similar passes (alternating widths forward
    after forward made the one-token pass look ~1.5x slower than inside the decoder), and the runs of all widths
    take turns over 3 rounds so slow phases of a shared machine hit all of them; the first forward of a run is
    not kept. ``repeats`` forwards per width in all. Returns one dict per width with ``ms`` (median) and
    ``ratio_to_w1`` (its cost relative to a one-token forward).

    After each forward, the model's ``nn.Linear`` layers alone are run once in sequence on ``[batch, w, in]``
    inputs (``linear_ms``, ``linear_ratio_to_w1``): the share of the forward's growth with ``w`` that the
    matrix multiplications (the BLAS kernel at small ``batch * w``) account for.
    """
    from transformers import DynamicCache

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    g = torch.Generator().manual_seed(0)
    cache = DynamicCache(config=model.config)
    times: dict[int, list[float]] = {w: [] for w in widths}
    linear_times: dict[int, list[float]] = {w: [] for w in widths}
    rounds = 3
    with torch.no_grad():
        prefix = _random_ids(model, (batch_size, context), generator=g, device=device)
        model(input_ids=prefix, cache=cache, use_cache=True, logits_to_keep=1)
        for _ in range(rounds):
            for w in widths:
                forwards, linear_seconds = _timed_run(model, cache, linears, batch_size=batch_size,
                                                      context=context, width=w, runs=-(-repeats // rounds),
                                                      generator=g, device=device)
                times[w] += forwards
                linear_times[w] += linear_seconds
    return cost_rows(times, linear_times, batch_size=batch_size, context=context)


def _timed_run(model, cache, linears: list[torch.nn.Linear], *, batch_size: int, context: int, width: int,
               runs: int, generator, device) -> tuple[list[float], list[float]]:
    """``runs`` timed forwards of ``width`` random tokens per row (after one untimed one), each followed by the
    model's ``linears`` alone; returns both lists of seconds."""
    from selfdistill.decode.blocks import model_pass_mask

    dtype = model.get_input_embeddings().weight.dtype
    # the mask the decoder would hand the model for this pass
    mask = model_pass_mask(model, torch.ones(batch_size, context + width, dtype=torch.long, device=device), width)
    positions = torch.arange(context, context + width, device=device)[None].repeat(batch_size, 1)
    linear_inputs = [torch.randn(batch_size, width, m.in_features, generator=generator).to(device, dtype)
                     for m in linears]
    forwards, linear_seconds = [], []
    for rep in range(runs + 1):
        ids = _random_ids(model, (batch_size, width), generator=generator, device=device)
        start = clock(device)
        model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
              logits_to_keep=width)
        forward_s = clock(device) - start
        cache.crop(-width)
        start = clock(device)
        for layer, x in zip(linears, linear_inputs):
            layer(x)
        linear_s = clock(device) - start
        if rep:  # the first forward of a run is not kept
            forwards.append(forward_s)
            if linears:
                linear_seconds.append(linear_s)
    return forwards, linear_seconds


def _random_ids(model, shape: tuple[int, int], *, generator, device) -> torch.Tensor:
    """Random token ids of ``shape`` below the last 8 embedding rows (where added mask tokens sit), on ``device``."""
    vocab = model.get_input_embeddings().weight.shape[0]
    return torch.randint(0, vocab - 8, shape, generator=generator).to(device)


def cost_rows(times: dict[int, list[float]], linear_times: dict[int, list[float]], *, batch_size: int,
              context: int) -> list[dict]:
    """One row per width (in ``times``' order): median ms of the forward and of the linears, and each relative to
    the first width's (``nan`` for the linears when the model has none)."""
    def median(values):
        return statistics.median(values) if values else float("nan")

    first = next(iter(times))
    base, linear_base = median(times[first]), median(linear_times[first])
    return [{"batch_size": batch_size, "context": context, "new_tokens": w,
             "ms": 1e3 * median(times[w]), "ratio_to_w1": median(times[w]) / base,
             "linear_ms": 1e3 * median(linear_times[w]), "linear_ratio_to_w1": median(linear_times[w]) / linear_base}
            for w in times]


def add_ratios(row: dict, best: dict[str, dict], *, baseline: bool) -> dict:
    """``row`` with its ratios to the baselines among ``best`` (one batch size's rows by name); ``baseline``: the
    row is a plain ``generate`` (no forward timings of its own)."""
    nan = float("nan")
    k1 = best[FORWARD_BASELINE]  # always run: the baseline of the forward ratios
    cb = best.get(CONTINUOUS_BASELINE)  # transformers' own continuous batching, when it ran (--only generate_cb)
    out = dict(row)
    out["ratio_to_generate"] = row["tokens_per_second"] / best[BASELINE]["tokens_per_second"]
    out["ratio_to_generate_cb"] = row["tokens_per_second"] / cb["tokens_per_second"] if cb else nan
    # Tokens per second of forward time, relative to static k=1: the decoder's bookkeeping removed.
    out["forward_only_ratio"] = nan if baseline else (
        row["new_tokens"] / row["forward_seconds"] / (k1["new_tokens"] / k1["forward_seconds"]))
    # Forward time per batched model call relative to static k=1's (prefill included): what a multi-token pass
    # costs on this hardware. A zero-overhead decoder's speedup is pooled tokens per forward / this;
    # speedup_per_tpf is the share of tokens per forward that turned into speed.
    out["pass_cost_ratio"] = nan if baseline else (
        row["forward_seconds"] / row["model_calls"] / (k1["forward_seconds"] / k1["model_calls"]))
    out["speedup_per_tpf"] = out["ratio_to_generate"] / row["tokens_per_forward_pooled"]
    return out


def pass_ops(model, prompt: list[int], unit, *, budgets: tuple[int, int] = (8, 40), pad_token_id: int = 0) -> dict:
    """Top-level ``aten::`` ops per model call while ``unit`` decodes ``prompt`` alone (batch 1): hardware-independent,
    deterministic, and on a GPU one kernel launch each (:mod:`selfdistill.op_count`).

    The prompt is decoded to two token budgets and the difference is taken, so the prefill and the set-up cancel
    out: ``(ops(high) - ops(low)) / (calls(high) - calls(low))``, where a call is a model forward (for the
    ``generate`` baselines: a new token, one step each). Returns ``ops_per_pass`` (all) and ``compute_ops_per_pass``
    (views and metadata left out).
    """
    from selfdistill.decode.engine import generate_many

    counts = []
    for budget in budgets:
        result = {}

        def run():
            result["out"] = generate_many(model, [prompt], unit, batch_size=1, max_new_tokens=budget,
                                          pad_token_id=pad_token_id, eos_token_id=[])
        ops = count_ops(run)
        out = result["out"]
        counts.append((ops, len(out.sequences[0]) if unit.baseline else out.model_calls))
    (low, low_calls), (high, high_calls) = counts
    calls = max(1, high_calls - low_calls)
    return {"ops_per_pass": (high.all - low.all) / calls, "compute_ops_per_pass": (high.compute - low.compute) / calls}


def ops_columns(ops: dict[str, dict], name: str) -> dict:
    """Setting ``name``'s :func:`pass_ops` and its ops per pass over ``generate``'s per step (``ops_ratio_to_generate``,
    the op-count twin of ``pass_cost_ratio``), from ``ops`` (every setting's, by name)."""
    return ops[name] | {"ops_ratio_to_generate": ops[name]["ops_per_pass"] / ops[BASELINE]["ops_per_pass"]}
