"""lm-evaluation-harness (0.4.13) integration: the ``selfdistill`` model and the helpers our task YAMLs call.

Importing this module registers the model ``selfdistill`` with lm-eval. Its ``generate_until`` decodes through
:func:`selfdistill.eval.evaluation.decode_batch` (the same code path as ``scripts/pareto.py``), so any strategy of
:class:`selfdistill.eval.evaluation.DecodeSetting` (the registry's, :mod:`selfdistill.decode.registry`) can be
scored on any generative lm-eval task; loglikelihood requests are plain forward passes (inherited from
lm-eval's ``HFLM``) with the ``<mtp>`` tokens taken out of the distribution, so an adapter folder scores exactly
what its base model scores. model_args: ``pretrained`` (path, hub id, or ``tiny-student``/``tiny-teacher``),
``strategy`` (any of :func:`selfdistill.decode.registry.strategy_names`) and its options (any the registry
declares: ``threshold``, ``k``, ``k_max``, ``mask_margin``, ``lead_groups``, ...; parsed and validated by the
registry, unset ones take the strategy's defaults, ``k_max`` the model's trained one where it records one),
``add_mask_token``, ``agreement`` (also decode with plain ``generate`` and report ``exact_agreement`` and, on
our ``sd_*`` tasks, ``answer_agreement`` with it) and HFLM's own (``batch_size``, ``dtype``, ``device``, ...).

Tokens per forward pass (mean and std over requests, prefill counted) and tokens/s per task are kept by the
model, reported in ``results["config"]["selfdistill_decoding"]`` by lm-eval itself (via ``get_model_info``) and
copied beside each task's metrics by :func:`add_decode_metrics` (the launcher ``python -m selfdistill.lm_eval``
does that, so they print in lm-eval's table).

The task YAMLs in :data:`TASKS_DIR` (``sd_gsm8k``, ``sd_gsm8k_cot``, ``sd_bbh``, ``sd_bbh_cot``, ``sd_bbh_learnt``,
``sd_synthetic``, ``sd_metamathqa``) read the offline copies under ``../shared/data`` through
:mod:`selfdistill.eval.task_suites`, render prompts with :mod:`selfdistill.data.prompts` and grade with :mod:`rewards`,
exactly as the sweep does. ``--metadata '{"gsm8k_path": ..., "bbh_path": ..., "metamathqa_path": ...}'``
points them at other local files or hub ids.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import datasets
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from rewards import grade, grader_for_task
from rewards.graders import EXTRACTORS
from selfdistill.eval.agreement import item_agreement
from selfdistill.decode.registry import pop_options
from selfdistill.eval.evaluation import DecodeSetting, decode_batch, speed_summary
from selfdistill.data.prompts import fewshot_prefix_for, render_prompt

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
MODEL_NAME = "selfdistill"


@register_model(MODEL_NAME)
class SelfDistillLM(HFLM):
    """HFLM whose ``generate_until`` runs our multi-token decoder (greedy); see the module docstring."""

    def __init__(self, pretrained="tiny-student", strategy: str = "conf_adapt", add_mask_token: bool = False,
                 agreement: bool = False, **kwargs):
        # The strategy's options (any the registry declares) arrive among HFLM's kwargs, as strings or numbers;
        # the registry parses and validates them (NaN / negative thresholds, options the strategy lacks refused).
        options = pop_options(kwargs)
        self.setting = DecodeSetting(strategy=strategy, **options)
        from selfdistill.models.calibration import calibration_from
        from selfdistill.models.loader import default_dtype, finish_loading
        from selfdistill.models.mask_token import mask_token_id_from, mask_token_ids, require_mask_token

        kwargs.setdefault("device", default_device())
        kwargs["dtype"] = kwargs.get("dtype") or default_dtype(kwargs["device"])  # bf16 on CUDA, fp32 on CPU
        if isinstance(pretrained, str):  # after the options are checked: an adapter folder loads here
            pretrained, kwargs, cmap = _resolve_pretrained(pretrained, kwargs)
        else:
            cmap = calibration_from(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
        needs_mask = self.setting.unit.needs_mask_token
        if needs_mask and mask_token_id_from(self.model) is None and not _as_bool(add_mask_token):
            require_mask_token(self.model, needed_by=f"strategy {strategy!r}",
                               remedy="use a distilled checkpoint or add_mask_token=True (untrained mask, step-0 "
                                      "baseline)")
        # the loader's own last step, wherever the weights came from: the folder's confidence map, a seeded
        # untrained mask row (as pareto's and bench_decode's)
        finish_loading(self.model, self.tokenizer, calibration=cmap,
                       add_mask_token=needs_mask and _as_bool(add_mask_token))
        self.setting = DecodeSetting.for_model(self.model, strategy, **options)  # its trained k_max, its map
        self._mask_ids = mask_token_ids(self.tokenizer)
        #: Also decode every request with plain ``generate`` and report agreement with it (twice the decoding).
        self.agreement = _as_bool(agreement)
        #: One entry per generate_until request: task, new tokens, forward passes, its batch's decode seconds.
        self.decode_records: list[dict] = []
        self._decode_seconds: dict[str, float] = defaultdict(float)

    def _model_call(self, inps, attn_mask=None, labels=None):
        """HFLM's forward (loglikelihood requests), with the ``<mtp>`` tokens taken out of the distribution: they are
        never text, so an adapter folder scores exactly what its base model scores (the gate is off at real
        tokens)."""
        logits = super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        if self._mask_ids:
            logits[..., self._mask_ids] = float("-inf")
        return logits

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding of each request with ``self.setting``; batches hold one task and one gen_kwargs."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            groups[(req.task_name or "", json.dumps(req.args[1], sort_keys=True, default=str))].append(i)
        batch_size = self.batch_size if isinstance(self.batch_size, int) else self.max_batch_size
        out: list[str | None] = [None] * len(requests)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        pbar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                    desc=f"generate_until ({self.setting.name})")
        for (task, _), idx in groups.items():
            gen_kwargs = dict(requests[idx[0]].args[1])
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else [s for s in until if s and s != eos_text]
            max_new = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
            if _as_bool(gen_kwargs.pop("do_sample", False)) or float(gen_kwargs.pop("temperature", 0) or 0) > 0:
                raise ValueError(f"task {task!r} asks for sampling; the selfdistill model decodes greedily only")
            idx = sorted(idx, key=lambda i: len(requests[i].args[0]))
            t0 = time.perf_counter()  # the whole group, batch_size rows in flight (continuous batching)
            gens = decode_batch(self.model, self.tokenizer, [requests[i].args[0] for i in idx], self.setting,
                                max_new_tokens=max_new, stops=until, batch_size=batch_size)
            self._decode_seconds[task] += time.perf_counter() - t0
            same = self._agreement([requests[i] for i in idx], gens, max_new=max_new, stops=until, batch=batch_size)
            for i, g, agree in zip(idx, gens, same):
                out[i] = g.text
                self.decode_records.append({"task": task, "new_tokens": g.new_tokens,
                                            "forward_passes": g.forward_passes,
                                            "tokens_per_forward": g.new_tokens / max(g.forward_passes, 1),
                                            "draft_checks": g.draft_checks} | agree)
                self.cache_hook.add_partial("generate_until", requests[i].args, g.text)
            pbar.update(len(idx))
        pbar.close()
        return out

    def _agreement(self, requests, gens, *, max_new: int, stops: list[str], batch: int) -> list[dict]:
        """Per request, with ``agreement``: is its completion (and, for our sd_* tasks, its extracted answer) the
        same as plain greedy ``generate``'s? (METHOD.md section 5; :mod:`selfdistill.eval.agreement`.)"""
        if not self.agreement:
            return [{} for _ in gens]
        ref = decode_batch(self.model, self.tokenizer, [r.args[0] for r in requests],
                           DecodeSetting(strategy="generate"), max_new_tokens=max_new, stops=stops, batch_size=batch)
        out = []
        for req, g, r in zip(requests, gens, ref):
            doc_task = (getattr(req, "doc", None) or {}).get("task")
            extract = EXTRACTORS[grader_for_task(doc_task)] if doc_task else None
            answers = None if extract is None else (extract(g.text), extract(r.text))
            out.append(item_agreement(g.text, r.text, answers=answers))
        return out

    def decode_summary(self) -> dict:
        """Setting plus, per task, tokens per forward (mean/std over requests) and tokens/s of generate_until."""
        per_task: dict[str, list[dict]] = defaultdict(list)
        for r in self.decode_records:
            per_task[r["task"]].append(r)
        batch = self.batch_size if isinstance(self.batch_size, int) else self.max_batch_size
        speeds = {t: {"n": len(rs)} | speed_summary(rs, seconds=self._decode_seconds[t], batch_size=batch)
                  | _agreement_means(rs) for t, rs in per_task.items()}
        return {"setting": self.setting.name, "strategy": self.setting.strategy} | self.setting.options() | {
            "per_task": speeds}

    def get_model_info(self) -> dict:
        # HFLM's version asks the hub for the model's sha (network); the rest is what matters offline.
        return {"model_num_parameters": sum(p.numel() for p in self.model.parameters()),
                "model_dtype": str(self.model.dtype), "selfdistill_decoding": self.decode_summary()}


def _agreement_means(records: list[dict]) -> dict:
    means = {}
    for key in ("answer_agreement", "exact_agreement"):
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            means[key] = sum(values) / len(values)
    return means


def add_decode_metrics(results: dict) -> dict:
    """Copy tokens per forward (mean, std), tokens/s, agreement and draft precision from
    ``results["config"]["selfdistill_decoding"]`` into
    each task's metrics (filter ``none``), so they print beside accuracy in lm-eval's table. Returns ``results``."""
    info = results.get("config", {}).get("selfdistill_decoding", {})
    for task, stats in info.get("per_task", {}).items():
        if task in results.get("results", {}):
            results["results"][task].update({
                "tokens_per_forward,none": stats["tokens_per_forward_mean"],
                "tokens_per_forward_std,none": stats["tokens_per_forward_std"],
                "tokens_per_second,none": stats["tokens_per_second"]}
                | {f"{key},none": stats[key] for key in ("answer_agreement", "exact_agreement", "draft_precision")
                   if key in stats})
    return results


def _resolve_pretrained(name: str, kwargs: dict):
    """``(pretrained, kwargs, confidence map)``: aliases and paths through :mod:`selfdistill.models.loader`. A
    gated-LoRA adapter folder is loaded there (HFLM cannot apply it) and handed to HFLM as a model with its
    tokenizer; anything else stays a path, which HFLM loads itself (so its multi-GPU options keep working), with
    the folder's confidence map read (and validated) before any weights load, for :func:`finish_loading`."""
    from selfdistill.models.calibration import calibration_from
    from selfdistill.models.loader import calibration_at, is_adapter_folder, load_model, resolve_model_path

    path = resolve_model_path(name)
    if not is_adapter_folder(path):
        return path, kwargs, calibration_at(path)
    kwargs = dict(kwargs)
    device = kwargs.get("device") or default_device()
    model, tokenizer = load_model(path, dtype=kwargs.pop("dtype", None), device=device)
    kwargs["tokenizer"] = tokenizer
    return model, kwargs, calibration_from(model)


def default_device(*, cuda: bool | None = None, env=None) -> str:
    """This process's GPU (``cuda:{LOCAL_RANK}``, so each rank of a multi-GPU launch gets its own) when CUDA is
    available, else ``cpu``. ``cuda`` and ``env`` replace ``torch.cuda.is_available()`` and ``os.environ``."""
    import os

    import torch

    if not (torch.cuda.is_available() if cuda is None else cuda):
        return "cpu"
    return f"cuda:{int((os.environ if env is None else env).get('LOCAL_RANK', 0))}"


def _as_bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes")


# ------------------------------------------------------------------------------------------------------------
# Functions the task YAMLs call (``!function selfdistill.eval.harness.<name>``).
# ------------------------------------------------------------------------------------------------------------
def _suite_dataset(name: str, *, path=None, **options) -> datasets.DatasetDict:
    """A task suite as lm-eval's dataset: one ``test`` split of normalised rows (all of them; lm-eval's
    ``--limit`` takes the first n)."""
    from selfdistill.eval.task_suites import suite_rows

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(suite_rows(name, path=path, **options))})


def gsm8k_dataset(gsm8k_path=None, **_metadata) -> datasets.DatasetDict:
    return _suite_dataset("gsm8k", path=gsm8k_path)


def bbh_dataset(bbh_path=None, bbh_subtasks=None, **_metadata) -> datasets.DatasetDict:
    return _suite_dataset("bbh", path=bbh_path, subtasks=bbh_subtasks)


def bbh_learnt_dataset(bbh_path=None, **_metadata) -> datasets.DatasetDict:
    return _suite_dataset("bbh_learnt", path=bbh_path)


def synthetic_dataset(**_metadata) -> datasets.DatasetDict:
    return _suite_dataset("synthetic")


def metamathqa_dataset(metamathqa_path=None, **_metadata) -> datasets.DatasetDict:
    return _suite_dataset("metamathqa", path=metamathqa_path)


def doc_to_text_zero_shot(doc: dict) -> str:
    return render_prompt(doc, style="zero_shot")


def doc_to_text_few_shot(doc: dict) -> str:
    """The few-shot CoT prompt, exemplars included (fixed exemplars, so the YAMLs use ``num_fewshot: 0``)."""
    return render_prompt(doc, style="few_shot", fewshot_prefix=fewshot_prefix_for(doc["task"], doc["subtask"]))


def process_results(doc: dict, results: list[str]) -> dict:
    """``acc`` of the (stop-string-cut) completion under the task's grader from :mod:`rewards`."""
    return {"acc": float(grade(grader_for_task(doc["task"]), results[0], doc["answer"]))}
