"""On-policy training text: the base model's own greedy answers to a dataset's train questions (records built by
:mod:`selfdistill.data.onpolicy`), as a folder the trainer reads with ``dataset: onpolicy:<folder>``.

    python scripts/onpolicy_data.py --model smollm2-135m-mtp --strategy verify --dataset gsm8k --limit 0 \\
        --out runs/data/gsm8k_onpolicy_smollm2
    python scripts/online_distill.py --config configs/smollm2_135m_gated_k5_onpolicy.yaml

``--dataset magpie`` needs no dataset: the model writes the questions itself (Magpie; :mod:`selfdistill.data.magpie`),
``--limit`` user turns sampled after its chat template's user header (``--magpie_temperature``, ``--magpie_top_p``,
seeded per chunk), each then answered greedily as below; a chunk keeps the sampled question beside its answer.

Questions come from the dataset's train side (:func:`selfdistill.data.sources.load_rows`: the held-out validation
groups and GSM8K's dev questions are left out), ``--limit`` of them drawn by ``--seed``. Each is decoded greedily with
the benchmark's own prompt (zero-shot, in the chat template with ``--chat_template``) and stop strings, exactly as
``scripts/pareto.py`` decodes. ``--strategy generate`` decodes with ``model.generate``; a lossless strategy
(``verify``, ``quadratic``) with a gated-LoRA adapter as ``--model`` writes the same greedy text of the adapter's base
model (real positions compute the base; identical in exact arithmetic) in fewer passes.

Rows are decoded in chunks; each finished chunk is written atomically to ``<out>/chunks/`` and holds ids and
generated text only (no benchmark text: the trainer joins it with its dataset by id), so a folder can be committed.
An interrupted run resumes where it stopped (the same command again), and a run with other options refuses the
folder. ``<out>/meta.json`` holds the command, commit, hardware, counts and time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

from selfdistill.data.magpie import MAGPIE
from selfdistill.run_folder import RunFolder


@dataclass(kw_only=True)
class OnPolicyConfig:
    model: str = field(default="smollm2-135m-instruct", metadata={
        "help": "the base model (alias, checkpoint folder or hub id): the one the student is distilled from"})
    dataset: str = field(default="gsm8k", metadata={
        "help": "training data spec as in the trainer's --dataset ('gsm8k[:path]', 'metamathqa[:path]', a file), "
                "or 'magpie': user turns the model writes itself (sampled after its chat template's user header)"})
    limit: int | None = field(default=1000, metadata={
        "help": "questions to answer (0 = all of the train side; with magpie: user turns to sample, >= 1)"})
    seed: int = field(default=0, metadata={"help": "which questions (and the train/validation split's seed)"})
    validation_fraction: float = field(default=0.01, metadata={"help": "as the trainer's (its held-out groups)"})
    strategy: str = field(default="generate", metadata={
        "help": "generate, or a lossless strategy (verify, quadratic) with a gated-LoRA adapter as --model: the "
                "adapter's base model's greedy text in fewer passes"})
    chat_template: bool = field(default=True, metadata={"help": "prompt in the tokenizer's chat template"})
    max_new_tokens: int = 256
    batch_size: int = 32
    chunk_rows: int = field(default=128, metadata={"help": "rows per resumable chunk"})
    dtype: str | None = field(default=None, metadata={
        "help": "float32, bfloat16, float16, float64 or auto (the checkpoint's); default: bfloat16 on CUDA, "
                "float32 on CPU"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, ..."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    out: str = field(default="runs/data/onpolicy", metadata={"help": "output folder"})
    magpie_temperature: float = field(default=1.0, metadata={"help": "magpie: sampling temperature of user turns"})
    magpie_top_p: float = field(default=1.0, metadata={"help": "magpie: nucleus of user-turn sampling (1 = all)"})
    magpie_max_tokens: int = field(default=128, metadata={
        "help": "magpie: a user turn not closed within this many tokens is dropped"})


def check_config(cfg: OnPolicyConfig) -> None:
    """Every option error as a ``ValueError`` naming it, before any model or data loads."""
    from selfdistill.cli import check_output_folder
    from selfdistill.models.loader import resolve_device, resolve_model_path, resolve_run_dtype

    for name in ("max_new_tokens", "batch_size", "chunk_rows"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.limit is not None and cfg.limit < 0:
        raise ValueError(f"--limit must be >= 0 (0 = all), got {cfg.limit}")
    if cfg.num_threads < 0:
        raise ValueError(f"--num_threads must be >= 0, got {cfg.num_threads}")
    if cfg.dataset == MAGPIE:
        check_magpie(cfg)
    resolve_device(cfg.device)
    cfg.dtype = resolve_run_dtype(cfg.dtype, device=cfg.device)
    path = resolve_model_path(cfg.model)
    check_strategy(cfg.strategy, model_path=path)
    check_output_folder(cfg.out, flag="--out")


def check_magpie(cfg: OnPolicyConfig) -> None:
    """Magpie needs a count of user turns, a chat template to frame them, and a sampling distribution."""
    if not cfg.limit:
        raise ValueError("--dataset magpie needs --limit >= 1: the number of user turns to sample")
    if not cfg.chat_template:
        raise ValueError("--dataset magpie needs --chat_template true: the turns are written and answered in it")
    if not (cfg.magpie_temperature > 0 and 0 < cfg.magpie_top_p <= 1 and cfg.magpie_max_tokens >= 1):
        raise ValueError(f"magpie sampling needs --magpie_temperature > 0, 0 < --magpie_top_p <= 1 and "
                         f"--magpie_max_tokens >= 1; got {cfg.magpie_temperature}, {cfg.magpie_top_p}, "
                         f"{cfg.magpie_max_tokens}")


def check_strategy(name: str, *, model_path: str) -> None:
    """Only greedy text of the base model is on-policy: ``generate``, or a lossless strategy on a gated-LoRA adapter
    (a full fine-tune's real positions are not the base model's, and a lossy strategy is not greedy)."""
    from selfdistill.decode.registry import strategy_class
    from selfdistill.models.loader import is_adapter_folder

    cls = strategy_class(name)
    if cls.baseline:
        if name != "generate":
            raise ValueError(f"--strategy {name} is not plain greedy decoding; use generate or a lossless strategy")
        return
    if not cls.lossless:
        raise ValueError(f"--strategy {name} is not lossless: its text is not the model's greedy text; use generate "
                         "or a lossless strategy (verify, quadratic)")
    if not is_adapter_folder(model_path):
        raise ValueError(f"--strategy {name} needs a gated-LoRA adapter folder as --model (its real positions are "
                         f"the base model); {model_path} is not one")


def fingerprint(cfg: OnPolicyConfig) -> dict:
    """What decides the folder's content; a resumed run must match it (threads and device only change speed)."""
    from selfdistill.data.onpolicy import FORMAT_VERSION

    keep = ("model", "strategy", "dataset", "limit", "seed", "validation_fraction", "chat_template", "max_new_tokens",
            "batch_size", "chunk_rows", "dtype")
    if cfg.dataset == MAGPIE:
        keep += ("magpie_temperature", "magpie_top_p", "magpie_max_tokens")
    return {"format_version": FORMAT_VERSION} | {k: getattr(cfg, k) for k in keep}


def claim_folder(cfg: OnPolicyConfig) -> RunFolder:
    """``cfg.out``, claimed for :func:`fingerprint` (:meth:`RunFolder.claim`: a folder of other options is refused)."""
    return RunFolder(cfg.out).claim(fingerprint(cfg), what="on-policy run", hint="Use another --out.")


def decode_chunk(model, tokenizer, rows: list[dict], setting, cfg: OnPolicyConfig) -> list[dict]:
    """The on-policy records of ``rows`` (finished or not), in order, decoded with ``setting``; a row the model
    wrote itself (Magpie) keeps its question, which no dataset holds."""
    from selfdistill.data.onpolicy import onpolicy_record
    from selfdistill.eval.evaluation import evaluate

    if not rows:  # a Magpie chunk whose every sampled turn was dropped
        return []
    records, _ = evaluate(model, tokenizer, rows, setting, batch_size=cfg.batch_size,
                          max_new_tokens=cfg.max_new_tokens, style="zero_shot", chat=cfg.chat_template)
    return [onpolicy_record(rec, max_new_tokens=cfg.max_new_tokens)
            | ({"question": row["question"]} if row["subtask"] == MAGPIE else {}) for rec, row in zip(records, rows)]


def question_chunks(cfg: OnPolicyConfig) -> list[Callable[..., list[dict]]]:
    """One function ``(model, tokenizer) -> rows`` per chunk: ``cfg.limit`` rows of the dataset drawn by seed, or,
    for ``magpie``, ``cfg.limit`` user turns sampled from the model (:func:`sample_magpie_rows`)."""
    from selfdistill.data.onpolicy import chunks, pick_rows

    if cfg.dataset == MAGPIE:
        sizes = [len(c) for c in chunks(range(cfg.limit), size=cfg.chunk_rows)]
        return [partial(sample_magpie_rows, first=i * cfg.chunk_rows, count=n, cfg=cfg) for i, n in enumerate(sizes)]
    from selfdistill.data.sources import load_rows

    rows = load_rows(cfg.dataset, split="train", seed=cfg.seed, validation_fraction=cfg.validation_fraction)
    return [partial(_given, part) for part in chunks(pick_rows(list(rows), limit=cfg.limit or None, seed=cfg.seed),
                                                     size=cfg.chunk_rows)]


def _given(rows: list[dict], model, tokenizer) -> list[dict]:
    return rows


def sample_magpie_rows(model, tokenizer, *, first: int, count: int, cfg: OnPolicyConfig) -> list[dict]:
    """Samples ``first .. first + count - 1``: user turns the model writes after its chat template's user header
    (:func:`~selfdistill.data.magpie.user_turn_template`), seeded by ``(cfg.seed, first)`` so a resumed run samples
    the same; those closed within ``cfg.magpie_max_tokens`` and not too short, as question rows."""
    import torch

    from selfdistill.data.magpie import clean_message, magpie_ids, magpie_question_row, user_turn_template

    turn = user_turn_template(tokenizer)
    prefix = tokenizer(turn.prefix, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
    torch.manual_seed(cfg.seed * 1_000_003 + first)
    texts = []
    for start in range(0, count, cfg.batch_size):
        ids = prefix.expand(min(cfg.batch_size, count - start), -1)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                             temperature=cfg.magpie_temperature, top_p=cfg.magpie_top_p,
                             max_new_tokens=cfg.magpie_max_tokens, stop_strings=[turn.end], tokenizer=tokenizer,
                             pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=False)
    messages = [clean_message(t, end=turn.end) for t in texts]
    return [magpie_question_row(i, m) for i, m in zip(magpie_ids(first, count, seed=cfg.seed), messages) if m]


def run_onpolicy_data(cfg: OnPolicyConfig) -> str:
    """Decode the missing chunks, then write ``meta.json``. Returns the dataset spec the trainer reads:
    ``onpolicy:<out>``."""
    import torch

    from selfdistill.data.onpolicy import CHUNKS_DIR, read_onpolicy_folder
    from selfdistill.eval.evaluation import DecodeSetting
    from selfdistill.models.loader import load_model
    from selfdistill.provenance import provenance

    check_config(cfg)
    folder = claim_folder(cfg)
    out = folder.root
    run_provenance = provenance()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    parts = question_chunks(cfg)
    names = [f"{CHUNKS_DIR}/{i:05d}.jsonl" for i in range(len(parts))]  # relative to the folder
    todo = [i for i, name in enumerate(names) if not folder.path(name).is_file()]
    started, model = time.time(), None
    for n, i in enumerate(todo, 1):
        if model is None:
            model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
            setting = DecodeSetting.for_model(model, cfg.strategy)  # an adapter's own trained k_max
        tic = time.time()
        done = decode_chunk(model, tokenizer, parts[i](model, tokenizer), setting, cfg)
        folder.write_text(names[i], "".join(json.dumps(r) + "\n" for r in done))
        print(f"chunk {i + 1}/{len(parts)} ({n}/{len(todo)} this run): {len(done)} rows in {time.time() - tic:.0f} s")
    _, every = read_onpolicy_folder(out)
    kept = sum(r["finished"] for r in every)
    if not kept:
        raise RuntimeError(f"no completion finished within --max_new_tokens {cfg.max_new_tokens}: nothing to train on")
    meta = {"config": asdict(cfg), "rows": len(every), "finished": kept,
            "base_correct": sum(r["base_correct"] for r in every),
            "new_tokens": sum(r["new_tokens"] for r in every), "seconds_this_run": round(time.time() - started, 1),
            "threads": torch.get_num_threads()}
    folder.write_record("meta.json", run_provenance, **meta)
    spec = f"onpolicy:{cfg.out}"
    print(f"wrote {out}: {kept} of {len(every)} rows finished ({meta['base_correct']} answered correctly by the "
          f"base model); train on them with dataset: {spec}")
    return spec
