"""The decoding engine: continuous batching of requests over one strategy, and :func:`generate_many` on top.

:class:`DecodeEngine` keeps up to ``max_batch`` requests in flight. Each :meth:`~DecodeEngine.step` runs one pass
over the running rows (build block -> forward -> drop mask KV -> accept -> bookkeeping), retires the rows that
finished, and at once prefills waiting requests into the freed slots (a separate pass over the newcomers only, whose
cache then joins the running batch), so throughput follows the pooled tokens per forward rather than the slowest
row. A row's output never depends on its neighbours (:mod:`selfdistill.decode.batch`), so requests may join while
others are in flight and leave (finish, or :meth:`~DecodeEngine.cancel`) without disturbing them::

    engine = DecodeEngine(model, "conf_adapt", threshold=0.9, max_batch=16, tokenizer=tok)
    rid = engine.add(prompt_ids, max_new_tokens=256, stop_strings=["\\n\\n"])   # any time, from any thread
    while engine.has_work:
        for update in engine.step():              # one thread drives step()
            stream(update.request_id, update.new_tokens)
            if update.finished: done(update.completion)
    engine.cancel(rid)                            # waiting or running: dropped before the next pass
"""

from __future__ import annotations

import itertools
import threading
import warnings
from collections import deque
from functools import partial

import torch

from selfdistill.decode.batch import SlotBatch, new_cache
from selfdistill.decode.blocks import Layout, block_layout
from selfdistill.decode.registry import Strategy, refuse_baseline, resolve_strategy
from selfdistill.decode.results import Completion, MTPOutput, Update
from selfdistill.decode.rows import RowState, StopStrings, default_eos_ids, id_set
from selfdistill.models.calibration import calibration_from
from selfdistill.models.mask_token import mask_token_id_from, trained_k_max_from
from selfdistill.timing import clock


class DecodeEngine:
    """Continuous-batching greedy decoder of one strategy; see the module docstring.

    Args:
        model: a Hugging Face causal LM (full attention layers).
        strategy: a registered name (options as keywords) or a :class:`~selfdistill.decode.registry.Strategy`.
        max_batch: rows in flight at once.
        mask_token_id: defaults to the model config's (:func:`mask_token_id_from`).
        eos_token_id: int or list; default the model's generation config / config eos.
        tokenizer: for stop strings and completion texts.
        pad_token_id: filler id of pad slots (its value never matters).
        profile: synchronise the device around forwards and keep :attr:`timings`.
    """

    def __init__(self, model, strategy: str | Strategy = "conf_adapt", *, max_batch: int = 16,
                 mask_token_id: int | None = None, eos_token_id=None, tokenizer=None,
                 pad_token_id: int | None = None, profile: bool = False, **options):
        self.strategy = strategy_for(model, strategy, **options)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.model, self.max_batch, self.tokenizer, self.profile = model, max_batch, tokenizer, profile
        self.mask_token_id = mask_token_id if mask_token_id is not None else mask_token_id_from(model)
        self.eos_ids = id_set(eos_token_id) if eos_token_id is not None else default_eos_ids(model)
        check_engine_setting(model, self.strategy, mask_token_id=self.mask_token_id, eos_ids=self.eos_ids)
        _warn_untrained_slots(model, self.strategy)
        new_cache(model)  # refuses sliding-window models before any request
        self.vocab_size = model.get_input_embeddings().weight.shape[0]
        self.filler = int(pad_token_id) if pad_token_id is not None else 0
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self._waiting: deque[RowState] = deque()
        self._prefilling: list[RowState] = []  # popped from _waiting, in their first pass: still this engine's work
        self._cancelled: dict[int, int] = {}  # request id -> passes its row had taken when it was cancelled
        #: most passes any cancelled row took part in after its cancel (a pass already running then counts: <= 1)
        self.passes_after_cancel = 0
        self._batch = SlotBatch(model)
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self.model_calls = 0
        self.timings = {"forward_s": 0.0}

    # ---- requests -------------------------------------------------------------------------------------------
    def add(self, prompt: list[int], *, max_new_tokens: int, stop_strings=None, request_id: int | None = None) -> int:
        """Queue a request (validated now, before any forward); returns its id. It joins at the next step."""
        prompt = [int(t) for t in prompt]
        check_request(prompt, max_new_tokens=max_new_tokens, max_positions=self.max_positions,
                      vocab_size=self.vocab_size)
        stopper = StopStrings(stop_strings, self.tokenizer) if stop_strings else None
        with self._lock:
            rid = next(self._ids) if request_id is None else request_id
            if any(r.request_id == rid for r in (*self._waiting, *self._prefilling, *self._batch.rows)):
                raise ValueError(f"request_id {rid} is already in this engine; ids must be unique")
            self._waiting.append(RowState(rid, prompt, max_new_tokens, self.eos_ids, self.strategy.num_masks,
                                          stopper))
        return rid

    def cancel(self, request_id: int) -> bool:
        """Drop a waiting or running request (a running row leaves before the next pass). ``False``: not known."""
        with self._lock:
            for row in self._waiting:
                if row.request_id == request_id:
                    self._waiting.remove(row)
                    return True
            for row in (*self._prefilling, *self._batch.rows):
                if row.request_id == request_id:  # leaves before its next pass (a prefilling row: its second)
                    self._cancelled[request_id] = len(row.per_pass)
                    return True
        return False

    @property
    def running(self) -> int:
        """Rows in flight, those in their first pass included."""
        return len(self._batch) + len(self._prefilling)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def has_work(self) -> bool:
        return bool(self._batch.rows or self._waiting or self._prefilling)

    # ---- passes ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[Update]:
        """One pass over the running rows, then newcomers prefilled into free slots. Returns one update per row
        that took part in a pass (finished ones carry their :class:`Completion`)."""
        with self._lock:
            if self._cancelled:
                for row in self._batch.rows:
                    if row.request_id in self._cancelled:
                        late = len(row.per_pass) - self._cancelled[row.request_id]
                        self.passes_after_cancel = max(self.passes_after_cancel, late)
                self._batch.keep([i for i, r in enumerate(self._batch.rows) if r.request_id not in self._cancelled])
                self._cancelled.clear()
        updates = self._pass(self._batch) if self._batch.rows else []
        with self._lock:
            free = self.max_batch - len(self._batch)
            newcomers = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
            self._prefilling = newcomers  # in no queue while their first pass runs, but owned: has_work, cancel
        if newcomers:
            fresh = SlotBatch(self.model, newcomers)
            updates += self._pass(fresh)
            with self._lock:
                self._batch.extend(fresh)
                self._prefilling = []
        return updates

    def _pass(self, batch: SlotBatch) -> list[Update]:
        """build block -> forward -> drop mask KV -> accept -> bookkeeping; finished rows leave ``batch``."""
        layout = self._layout(batch.rows)
        logits, fed, seconds = batch.forward(layout, mask_columns=layout.mask_columns,
                                             clock=partial(clock, batch.device) if self.profile else None)
        self.timings["forward_s"] += seconds
        self.model_calls += 1
        outcomes = self.strategy.accept(logits, fed)
        batch.settle([o.kept for o in outcomes])
        updates, keep = [], []
        for i, (row, outcome) in enumerate(zip(batch.rows, outcomes)):
            new = row.advance(outcome, self.strategy)
            done = row.reason is not None
            updates.append(Update(row.request_id, new, row.completion(self.tokenizer) if done else None))
            if not done:
                keep.append(i)
        batch.keep(keep)
        return updates

    def _layout(self, rows: list[RowState]) -> Layout:
        # Never predict past the token budget or the position table (near the end fewer masks are appended).
        room = max(self.strategy.room(r.remaining, r.drafts) for r in rows)
        if self.max_positions is not None:
            room = min(room, self.max_positions - max(r.pos + len(r.pending) for r in rows))
        n_masks = max(0, min(max(r.reach for r in rows), room))
        drafts = [r.drafts for r in rows]
        return block_layout([r.pending for r in rows], drafts, [r.pos for r in rows], n_masks=n_masks,
                            group_anchors=self.strategy.group_anchors(max(drafts)), mask_id=self.mask_token_id,
                            filler=self.filler)

    def run(self) -> list[Completion]:
        """Step until no work is left; the completions in the order they finished."""
        done = []
        while self.has_work:
            done += [u.completion for u in self.step() if u.finished]
        return done


def check_request(prompt: list[int], *, max_new_tokens, max_positions: int | None, row: str = "",
                  vocab_size: int | None = None) -> None:
    """Refuse an empty prompt, ids outside the vocabulary (e.g. another tokenizer's), a bad ``max_new_tokens`` or
    a prompt that runs past the position table."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not prompt:
        raise ValueError(f"empty prompt{row}: every row needs at least one real token")
    if vocab_size is not None and (bad := [t for t in prompt if not 0 <= t < vocab_size]):
        raise ValueError(f"token ids outside the model's vocabulary (size {vocab_size}){row}: {bad[:5]}; was the "
                         "prompt made by another model's tokenizer?")
    if max_positions is not None and len(prompt) + max_new_tokens > max_positions:
        raise ValueError(
            f"prompt of {len(prompt)} tokens{row} + max_new_tokens={max_new_tokens} exceeds the model's "
            f"max_position_embeddings={max_positions}; shorten the prompt or lower max_new_tokens")


def strategy_for(model, strategy: str | Strategy, **options) -> Strategy:
    """The setting as ``model`` decodes it (:func:`~selfdistill.decode.registry.resolve_strategy`): an unset
    ``k_max`` is the one it was trained on, and ConfAdapt reads its confidence calibration where it has one."""
    return resolve_strategy(strategy, trained_k_max=trained_k_max_from(model), calibration=calibration_from(model),
                            **options)


def check_engine_setting(model, strategy: Strategy, *, mask_token_id: int | None = None,
                         eos_ids: set[int] | None = None) -> None:
    """Every check an engine makes of a (resolved) setting against ``model``, without building one: a baseline is
    refused, a setting that feeds masks needs a mask token the model has and that is no EOS id. The server runs it
    on a request's setting before queueing it."""
    refuse_baseline(strategy, by="the engine", instead="decode it with generate_many")
    mask_token_id = mask_token_id if mask_token_id is not None else mask_token_id_from(model)
    _check_mask_token(model, strategy, mask_token_id)
    eos_ids = eos_ids if eos_ids is not None else default_eos_ids(model)
    if strategy.needs_mask_token and mask_token_id in eos_ids:
        raise ValueError(f"mask_token_id {mask_token_id} is also an EOS id: every emitted mask prediction "
                         "of it would end the row; give the mask token an id of its own")


def _check_mask_token(model, strategy: Strategy, mask_token_id: int | None) -> None:
    if not strategy.needs_mask_token:
        return
    if mask_token_id is None:
        raise ValueError("the model has no <mtp> mask token id (config.mtp_mask_token_id), which strategy "
                         f"{strategy.name!r} needs: add one with selfdistill.models.mask_token.add_mask_token or "
                         "pass mask_token_id=")
    vocab = model.get_input_embeddings().weight.shape[0]
    if not 0 <= mask_token_id < vocab:
        raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary (size {vocab})")


def _warn_untrained_slots(model, strategy: Strategy) -> None:
    """Warn when a pass reads mask slots deeper than the model was trained on (``config.mtp_trained_k_max``): their
    predictions are untrained, so they cost compute and, where not verified, fidelity."""
    trained, positions = trained_k_max_from(model), strategy.num_masks + 1
    if trained is not None and positions > trained:
        warnings.warn(f"{strategy!r} reads {positions} positions per pass but this model was trained "
                      f"on chunks of at most {trained} tokens (config.mtp_trained_k_max): slots past {trained} are "
                      f"untrained; pass k_max={trained} (static: k <= {trained})", UserWarning, stacklevel=3)


def generate_many(model, prompts: list[list[int]], strategy: str | Strategy = "conf_adapt", *, batch_size: int = 16,
                  max_new_tokens: int, eos_token_id=None, stop_strings=None, tokenizer=None,
                  pad_token_id: int | None = None, mask_token_id: int | None = None, profile: bool = False,
                  **options) -> MTPOutput:
    """Decode ``prompts`` (id lists) with ``batch_size`` rows in flight; results in input order.

    Engine strategies go through :class:`DecodeEngine` (continuous batching); the ``generate`` baselines through
    :mod:`selfdistill.decode.baseline`. Every prompt is validated before the first forward.
    """
    unit = strategy_for(model, strategy, **options)
    if unit.baseline:
        from selfdistill.decode.baseline import generate_baseline

        return generate_baseline(model, prompts, unit, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 eos_token_id=eos_token_id, stop_strings=stop_strings, tokenizer=tokenizer,
                                 pad_token_id=pad_token_id)
    engine = DecodeEngine(model, unit, max_batch=batch_size, mask_token_id=mask_token_id, eos_token_id=eos_token_id,
                          tokenizer=tokenizer, pad_token_id=pad_token_id, profile=profile)
    check_prompts(prompts, max_new_tokens=max_new_tokens, max_positions=engine.max_positions,
                  vocab_size=engine.vocab_size)
    ids = [engine.add(p, max_new_tokens=max_new_tokens, stop_strings=stop_strings) for p in prompts]
    start = clock(model.device)
    by_id = {c.request_id: c for c in engine.run()}
    total = clock(model.device) - start
    timings = {} if not profile else {"forward_s": engine.timings["forward_s"], "total_s": total,
                                      "other_s": total - engine.timings["forward_s"]}
    return MTPOutput.from_completions([by_id[i] for i in ids], model_calls=engine.model_calls, timings=timings)


def check_prompts(prompts: list[list[int]], *, max_new_tokens, max_positions: int | None,
                  vocab_size: int | None = None) -> None:
    """:func:`check_request` for every prompt, naming the rows at fault."""
    if not prompts:
        raise ValueError("input_ids has no rows")
    empty = [i for i, p in enumerate(prompts) if not p]
    if empty:
        raise ValueError(f"empty prompt in row(s) {empty}: every row needs at least one real token")
    for i, p in enumerate(prompts):
        check_request(p, max_new_tokens=max_new_tokens, max_positions=max_positions, row=f" (row {i})",
                      vocab_size=vocab_size)
