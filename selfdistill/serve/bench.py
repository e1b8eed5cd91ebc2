"""Serving benchmark: the OpenAI-compatible server under real HTTP load, plain decoding vs multi-token settings.

Starts ``python -m selfdistill.serve`` once (a subprocess on a free 127.0.0.1 port; server setting static k=1) and
sends GSM8K test prompts (zero-shot, in the model's chat format when its tokenizer has a chat template, else as plain
completions) with each setting as per-request ``selfdistill`` options: plain decoding (static k=1, which is greedy
``generate``), static k=3, ConfAdapt 0.9 and lossless verify. For each concurrency (default 1 and 16) a bounded loop
of ``concurrency`` streaming clients takes the ``--requests`` prompts from one queue until it is empty. Reported per
(setting, concurrency): output tokens/s over the run's wall time, the ratio to plain decoding at the same
concurrency, time to first token (mean, median), tokens per forward (pooled, from the server's usage) and the mean
request latency. Writes ``bench.csv`` and ``bench.json`` (with command, commit, hardware) to ``--out``
(default ``results/bench_serve/<name>/``). Never asserts on timing.

    .venv/bin/python scripts/bench_serve.py --model tiny-student --requests 64 --max-tokens 256
    .venv/bin/python scripts/bench_serve.py --model smollm2-135m-mtp --k_max 5 --mask_margin 2 --requests 16
    .venv/bin/python scripts/bench_serve.py --model ADAPTER_DIR --dtype bfloat16 --name smollm2_adapter
    .venv/bin/python scripts/bench_serve.py --requests 2 --max-tokens 8 --concurrency 1 2 --out /tmp/x  # smoke
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selfdistill.decode.registry import with_options
from selfdistill.paths import REPO_ROOT
from selfdistill.run_folder import RunFolder

#: setting name -> per-request options; the first is the baseline of the ratios.
SETTINGS = {"plain_static_k1": {"strategy": "static", "k": 1}, "static_k3": {"strategy": "static", "k": 3},
            "conf_adapt_0.9": {"strategy": "conf_adapt", "threshold": 0.9},
            "verify": {"strategy": "verify"}}  # lossless, every mask prediction drafted (as everywhere else)


@with_options("k_max", "mask_margin", note="for every setting that takes it; use the k the model was trained to")
@dataclass(kw_only=True)
class BenchServeConfig:
    model: str = field(default="tiny-student", metadata={"help": "what the server loads (alias, folder, hub id)"})
    name: str | None = field(default=None, metadata={"help": "results/bench_serve/<name>/ (default: from --model)"})
    out: str | None = field(default=None, metadata={"help": "output folder (overrides --name)"})
    settings: list[str] = field(default_factory=lambda: list(SETTINGS), metadata={
        "help": f"of {', '.join(SETTINGS)}; plain_static_k1 always runs (the baseline)"})
    concurrency: list[int] = field(default_factory=lambda: [1, 16])
    requests: int = field(default=32, metadata={"help": "prompts per (setting, concurrency)"})
    max_tokens: int = 256
    warmup: int = field(default=2, metadata={"help": "unmeasured requests per setting first"})
    max_batch: int = 16
    dtype: str | None = None
    device: str | None = "auto"
    gsm8k_path: str | None = field(default=None, metadata={"help": "default ../shared/data/gsm8k"})
    startup_timeout: float = field(default=300.0, metadata={"help": "seconds the server may take to load"})


def check_config(cfg: BenchServeConfig) -> None:
    from selfdistill.cli import check_output_folder

    unknown = sorted(set(cfg.settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"--settings: unknown {unknown}; choose from {list(SETTINGS)}")
    if (cfg.k_max is not None and cfg.k_max < 1) or (cfg.mask_margin is not None and cfg.mask_margin < 1):
        raise ValueError("--k_max and --mask_margin must be >= 1")
    if cfg.requests < 1 or cfg.max_tokens < 1 or cfg.warmup < 0 or not cfg.concurrency or min(cfg.concurrency) < 1:
        raise ValueError("--requests, --max-tokens and every --concurrency must be >= 1, --warmup >= 0")
    check_output_folder(out_dir(cfg), flag="--out")


def setting_options(cfg: BenchServeConfig) -> dict[str, dict]:
    """Each setting's per-request options, with ``--k_max``/``--mask_margin`` given to the adaptive ones."""
    from selfdistill.decode.registry import takes_option

    extra = {name: v for name, v in (("k_max", cfg.k_max), ("mask_margin", cfg.mask_margin)) if v is not None}
    return {name: opts | {k: v for k, v in extra.items() if takes_option(opts["strategy"], k)}
            for name, opts in SETTINGS.items()}


def out_dir(cfg: BenchServeConfig) -> Path:
    from selfdistill.cli import plain_folder_name

    if cfg.out:
        return Path(cfg.out)
    return REPO_ROOT / "results" / "bench_serve" / plain_folder_name(cfg.name or Path(cfg.model.rstrip("/")).name)


def load_prompts(cfg: BenchServeConfig) -> tuple[list[str], list[str]]:
    """The first ``--requests`` GSM8K test questions (zero-shot) and their stop strings."""
    from selfdistill.data.prompts import render_prompt, stop_strings
    from selfdistill.eval.task_suites import suite_rows

    rows = suite_rows("gsm8k", path=cfg.gsm8k_path)[:cfg.requests]
    return [render_prompt(r, style="zero_shot") for r in rows], stop_strings("gsm8k", style="zero_shot")


def server(cfg: BenchServeConfig):
    """``python -m selfdistill.serve`` for this benchmark (a subprocess; ``with server(cfg) as url``)."""
    from selfdistill.serve.process import ServeProcess

    args = ["--model", cfg.model, "--strategy", "static", "--k", "1", "--max-batch", str(cfg.max_batch),
            "--max-engines", str(len(SETTINGS)), "--log-level", "warning"]
    args += [a for flag, v in (("--dtype", cfg.dtype), ("--device", cfg.device)) if v for a in (flag, v)]
    return ServeProcess(args, startup_timeout=cfg.startup_timeout)


async def one_request(http, url: str, body: dict) -> dict:
    """One streamed request: seconds to the first text, total seconds, tokens and passes from the usage."""
    start, first, usage = time.perf_counter(), None, None
    async with http.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status_code}: {(await resp.aread()).decode()}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            choice = chunk["choices"][0] if chunk["choices"] else {}
            if first is None and (choice.get("text") or choice.get("delta", {}).get("content")):
                first = time.perf_counter() - start
            usage = chunk.get("usage") or usage
    return {"ttft_s": first, "latency_s": time.perf_counter() - start, "tokens": usage["completion_tokens"],
            "passes": usage["forward_passes"]}


async def run_load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[dict], float]:
    """``concurrency`` clients drain ``bodies`` (a bounded queue); per-request records and the wall seconds."""
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    records: list[dict] = []

    async def client(http):
        while not queue.empty():
            records.append(await one_request(http, url, queue.get_nowait()))

    limits = httpx.Limits(max_connections=concurrency + 1)
    async with httpx.AsyncClient(timeout=None, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(concurrency)])
        return records, time.perf_counter() - start


def request_bodies(url: str, model: str, prompts: list[str], stops: list[str], options: dict, *,
                   max_tokens: int) -> tuple[str, list[dict]]:
    """The endpoint and bodies: chat when the server's model has a chat template, else completions."""
    import httpx

    common = {"model": model, "max_tokens": max_tokens, "stop": stops, "stream": True,
              "stream_options": {"include_usage": True}, "selfdistill": options}
    probe = httpx.post(f"{url}/v1/chat/completions", timeout=600, json=common | {
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stream": False})
    if probe.status_code == 200:
        return f"{url}/v1/chat/completions", [common | {"messages": [{"role": "user", "content": p}]}
                                              for p in prompts]
    return f"{url}/v1/completions", [common | {"prompt": p} for p in prompts]


def summarise(setting: str, concurrency: int, records: list[dict], seconds: float) -> dict:
    tokens, ttft = sum(r["tokens"] for r in records), [r["ttft_s"] for r in records if r["ttft_s"] is not None]
    return {"setting": setting, "concurrency": concurrency, "requests": len(records), "output_tokens": tokens,
            "seconds": seconds, "output_tokens_per_s": tokens / seconds,
            "tokens_per_forward_pooled": tokens / max(sum(r["passes"] for r in records), 1),
            "ttft_mean_s": statistics.fmean(ttft) if ttft else float("nan"),
            "ttft_median_s": statistics.median(ttft) if ttft else float("nan"),
            "latency_mean_s": statistics.fmean(r["latency_s"] for r in records)}


def run_bench_serve(argv: list[str] | None = None) -> list[dict]:
    from selfdistill.cli import parse_config
    from selfdistill.provenance import provenance

    cfg = parse_config(BenchServeConfig, argv, check=check_config, prog="scripts/bench_serve.py",
                       description=__doc__.split("\n\n")[0])
    run_provenance = provenance(["scripts/bench_serve.py", *(sys.argv[1:] if argv is None else argv)])
    prompts, stops = load_prompts(cfg)
    settings = ["plain_static_k1", *[s for s in cfg.settings if s != "plain_static_k1"]]
    options = setting_options(cfg)
    rows = []
    with server(cfg) as url:
        for conc in cfg.concurrency:  # settings interleaved inside each concurrency
            for setting in settings:
                endpoint, bodies = request_bodies(url, cfg.model, prompts, stops, options[setting],
                                                  max_tokens=cfg.max_tokens)
                asyncio.run(run_load(endpoint, bodies[:cfg.warmup], 1))
                records, seconds = asyncio.run(run_load(endpoint, bodies, conc))
                rows.append(summarise(setting, conc, records, seconds) | {"endpoint": endpoint.rsplit("/v1", 1)[1]})
                print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        base = next(r for r in rows if r["setting"] == "plain_static_k1" and r["concurrency"] == row["concurrency"])
        row["ratio_to_plain"] = row["output_tokens_per_s"] / base["output_tokens_per_s"]
    write(out_dir(cfg), rows, cfg, run_provenance)
    return rows


def write(out: Path, rows: list[dict], cfg: BenchServeConfig, run_provenance: dict) -> None:
    folder = RunFolder(out)
    folder.write_csv("bench.csv", rows)
    folder.write_record("bench.json", run_provenance, config=asdict(cfg), settings=setting_options(cfg), rows=rows)
    print(f"wrote {out / 'bench.csv'} and {out / 'bench.json'}")
