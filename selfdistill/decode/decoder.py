"""Multi-token decoding with the ``<mtp>`` mask token (METHOD.md section 5): :func:`mtp_generate`.

Every forward pass feeds, per row, the tokens emitted by the previous pass as real tokens followed by the
masks; the last real position and the masks give one next-token distribution each; an acceptance rule
(:mod:`selfdistill.decode.acceptance`) decides how many tokens the row emits; the mask entries are cropped from the KV
cache so mask KV is never kept.

Strategies:
- ``static``: ``k`` tokens per pass (``k - 1`` masks).
- ``conf_adapt``: ``k_max - 1`` masks; emit the longest leading run of positions with top-1 probability
  ``>= threshold``, at least one.
- ``verify``: lossless. The confident leading run of mask predictions (``>= threshold``; 0 accepts every mask)
  is a provisional draft. The next pass re-feeds it as real tokens; their next-token logits accept the
  longest draft prefix equal to the model's own greedy choice, plus the model's correction token. The output
  equals plain greedy decoding (``model.generate(do_sample=False)``) of the same model.

Adaptive mask count (``mask_margin=m``, ``conf_adapt`` and ``verify``): a pass costs roughly its fed tokens, and
``k_max - 1`` masks are mostly wasted on a model that accepts one or two tokens per pass. With a margin, each row
appends the number of masks it used in its previous pass (accepted mask predictions / new drafts) plus ``m``,
at most ``k_max - 1`` (the first pass appends ``k_max - 1``). A row's acceptance is capped at its own reach, so
batched output still equals each row alone. ``verify`` stays lossless; ``conf_adapt`` differs from the fixed rule
only where a confident run would have reached past the row's masks, and then the next pass continues it from real
tokens instead. ``mask_margin=None`` (default) is METHOD.md's fixed ``k_max - 1``.

Batching (exact): each row keeps its own 2-D attention mask over the shared cache slots and explicit
``position_ids`` (its count of real tokens). A pass feeds ``[the row's real tokens | pads | masks]`` per row,
so the masks of every row share the last columns; the pad slots (and, for ``verify``, rejected drafts) stay in
the cache as holes with attention mask 0. Plain causal attention over slots plus that
padding mask is then exactly each row's own causal attention, and cropping the last ``num_masks`` slots
removes the masks of every row at once. Rows that finish are dropped from the batch and cache slots that are
holes in every remaining row are compacted away.

Tokens per forward ("effective k", METHOD.md section 5): tokens emitted by a row / forward passes the row
took part in, the prefill pass included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from selfdistill.decode.acceptance import (check_mask_margin, conf_adapt_accept, draft_lengths, static_accept,
                                    verify_accept)
from selfdistill.models.attention import DENSE_MASK_IMPLEMENTATIONS, dense_mask_for
from selfdistill.models.mask_token import mask_token_id_from

STRATEGIES = ("static", "conf_adapt", "verify")


@dataclass
class MTPOutput:
    """Result of :func:`mtp_generate`, one entry per input row.

    ``sequences`` are the generated ids only (no prompt); an EOS token that ended a row is kept and nothing
    after it. ``texts`` (only with a tokenizer) are decoded without special tokens and cut right before the
    first stop string. ``tokens_per_pass[b]`` lists how many tokens row ``b`` emitted in each of its passes.
    ``finish_reasons`` are ``"eos"``, ``"stop_string"`` or ``"length"``. ``model_calls`` counts the batched
    forward calls (at batch 1 it equals the row's ``forward_passes``). ``timings`` holds seconds spent in model
    forwards vs. everything else (with ``profile=True``; device-synchronised).
    """

    sequences: list[list[int]]
    forward_passes: list[int]
    tokens_per_forward: list[float]
    finish_reasons: list[str]
    tokens_per_pass: list[list[int]] = field(default_factory=list)
    texts: list[str] | None = None
    model_calls: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def default_eos_ids(model) -> set[int]:
    """EOS ids from ``model.generation_config`` (else ``model.config``); an int or a list there."""
    for cfg in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
        if eos is not None:
            return _id_set(eos)
    return set()


def _id_set(ids) -> set[int]:
    if ids is None:
        return set()
    if isinstance(ids, int):
        return {ids}
    if isinstance(ids, torch.Tensor):
        return {int(i) for i in ids.flatten().tolist()}
    return {int(i) for i in ids}


def prompt_rows(input_ids, attention_mask=None) -> list[list[int]]:
    """The real prompt tokens of each row (padding removed, whichever side it is on).

    Args:
        input_ids: ``[B, T]`` tensor, or a list of token-id lists.
        attention_mask: ``[B, T]`` (1 = real token) or ``None`` (every token is real).
    """
    if isinstance(input_ids, torch.Tensor):
        if input_ids.ndim == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        ids = input_ids.tolist()
    else:
        ids = [list(map(int, row)) for row in input_ids]
    if attention_mask is None:
        return ids
    mask = attention_mask.tolist() if isinstance(attention_mask, torch.Tensor) else list(attention_mask)
    if len(mask) != len(ids) or any(len(m) != len(r) for m, r in zip(mask, ids)):
        raise ValueError("attention_mask must have the same shape as input_ids")
    return [[t for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]


class _StopStrings:
    """Detects stop strings in a row's generated text, cutting at token granularity.

    The row ends with the shortest token prefix whose decoded text contains a stop string (the tokens that
    complete it are kept, as ``generate(stop_strings=...)`` does); ``cut_text`` removes the text from the stop
    string on. Only a tail window is decoded each pass so the cost does not grow with the output.
    """

    def __init__(self, stop_strings, tokenizer):
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.strings = [s for s in stop_strings if s]
        if not self.strings:
            raise ValueError("stop_strings must contain at least one non-empty string")
        if tokenizer is None:
            raise ValueError("stop_strings need a tokenizer= to decode the generated tokens")
        self.tokenizer = tokenizer
        # A stop string of c characters ending in the new tokens starts at most c tokens before them (each
        # token decodes to >= 1 character); one more token of context keeps word-boundary decoding stable.
        self.window = max(len(s) for s in self.strings) + 1

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _found(self, ids) -> bool:
        text = self._decode(ids)
        return any(s in text for s in self.strings)

    def end_of(self, seq: list[int], prev_len: int) -> int | None:
        """Length of ``seq`` to keep if a stop string appeared in ``seq[prev_len:]``, else ``None``."""
        start = max(0, prev_len - self.window)
        if not self._found(seq[start:]):
            return None
        for n in range(prev_len + 1, len(seq) + 1):
            if self._found(seq[start:n]):
                return n
        return len(seq)

    def cut_text(self, text: str) -> str:
        cuts = [i for i in (text.find(s) for s in self.strings) if i >= 0]
        return text[:min(cuts)] if cuts else text


def _validate(model, rows, *, strategy, k, k_max, threshold, max_new_tokens, mask_token_id, mask_margin):
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    check_mask_margin(strategy, mask_margin)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if strategy == "static":
        if k < 1:
            raise ValueError(f"static k must be >= 1, got {k}")
        num_masks = k - 1
    else:
        if k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {k_max}")
        if threshold is None:
            raise ValueError(f"strategy {strategy!r} needs a threshold")
        num_masks = k_max - 1
    if not rows:
        raise ValueError("input_ids has no rows")
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise ValueError(f"empty prompt in row(s) {empty}: every row needs at least one real token")
    if num_masks > 0:
        if mask_token_id is None:
            raise ValueError(
                "the model has no <mtp> mask token id (config.mtp_mask_token_id): add one with "
                "selfdistill.models.mask_token.add_mask_token or pass mask_token_id="
            )
        vocab = model.get_input_embeddings().weight.shape[0]
        if not 0 <= mask_token_id < vocab:
            raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary (size {vocab})")
    max_pos = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(r) for r in rows)
    if max_pos is not None and longest + max_new_tokens > max_pos:
        raise ValueError(
            f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the model's "
            f"max_position_embeddings={max_pos}; shorten the prompt or lower max_new_tokens"
        )
    return num_masks, max_pos


@torch.no_grad()
def mtp_generate(model, input_ids, attention_mask=None, *, mask_token_id: int | None = None,
                 strategy: str = "conf_adapt", k: int = 1, k_max: int = 16, threshold: float = 0.9,
                 max_new_tokens: int, eos_token_id=None, stop_strings=None, tokenizer=None,
                 pad_token_id: int | None = None, mask_margin: int | None = None,
                 profile: bool = False) -> MTPOutput:
    """Greedy multi-token generation with the ``<mtp>`` mask token; see the module docstring.

    Args:
        model: a Hugging Face causal LM (full attention layers; sliding-window caches are refused).
        input_ids: ``[B, T]`` prompt ids (any padding side) or a list of id lists.
        attention_mask: ``[B, T]``, 1 for real tokens; ``None`` = no padding.
        mask_token_id: defaults to the id recorded in the model config (:func:`mask_token_id_from`).
        strategy: ``"static"`` | ``"conf_adapt"`` | ``"verify"``.
        k: tokens per pass for ``static``.
        k_max: prediction positions per pass for ``conf_adapt``/``verify`` (``k_max - 1`` masks).
        threshold: ConfAdapt tau; for ``verify`` the confidence a mask prediction needs to become a draft.
        max_new_tokens: hard cap on generated tokens per row.
        eos_token_id: int or list; defaults to the model's generation config / config eos.
        stop_strings: str or list; the row stops once its decoded text contains one (needs ``tokenizer``).
        tokenizer: used for ``stop_strings`` and to fill ``MTPOutput.texts``.
        pad_token_id: filler id for pad slots (its value never matters: those slots are masked out).
        mask_margin: ``None`` = always ``k_max - 1`` masks; an int ``m >= 1`` = per row, the masks it used last
            pass + ``m`` (at most ``k_max - 1``); see the module docstring.
        profile: synchronise the device around forwards and fill ``MTPOutput.timings``.
    """
    rows = prompt_rows(input_ids, attention_mask)
    if mask_token_id is None:
        mask_token_id = mask_token_id_from(model)
    num_masks, max_pos = _validate(model, rows, strategy=strategy, k=k, k_max=k_max, threshold=threshold,
                                   max_new_tokens=max_new_tokens, mask_token_id=mask_token_id,
                                   mask_margin=mask_margin)
    eos_ids = _id_set(eos_token_id) if eos_token_id is not None else default_eos_ids(model)
    stopper = _StopStrings(stop_strings, tokenizer) if stop_strings else None
    filler = int(pad_token_id) if pad_token_id is not None else 0
    device = model.get_input_embeddings().weight.device

    cache = DynamicCache(config=model.config)
    if any(cache.is_sliding) or any(getattr(cache, "is_linear", [])):
        raise ValueError("mtp_generate needs full-attention layers; this model's cache has sliding/linear layers")

    num_rows = len(rows)
    outputs: list[list[int]] = [[] for _ in range(num_rows)]
    per_pass: list[list[int]] = [[] for _ in range(num_rows)]
    reasons = ["length"] * num_rows
    # Per active row (batch order): original index, tokens to feed, how many trailing ones are verify drafts,
    # and the position id of the first token to feed (= real tokens already in the cache).
    active = list(range(num_rows))
    pending = [list(r) for r in rows]
    drafts = [0] * num_rows
    pos = [0] * num_rows
    reach = [num_masks] * num_rows  # masks each row may use this pass (all of them unless mask_margin is set)
    attn = torch.zeros(num_rows, 0, dtype=torch.long, device=device)
    t_forward = t_total = 0.0
    model_calls = 0
    t_start = time.perf_counter()

    while active:
        lens = [len(p) for p in pending]
        width = max(lens)
        # Never predict past the token budget or the position table (near the end fewer masks are appended).
        room = max(max_new_tokens - len(outputs[i]) - 1 - m for i, m in zip(active, drafts))
        if max_pos is not None:
            room = min(room, max_pos - max(p + n for p, n in zip(pos, lens)))
        n_masks = max(0, min(max(reach), room))
        block = width + n_masks
        max_draft = max(drafts)
        n_sel = max_draft + 1 + n_masks

        # Per row, block = [real tokens | pads | masks]. Pads sit after real tokens, so every query slot sees
        # at least one real key (a fully masked query row turns into NaN in eager fp64 attention), and the masks
        # of all rows share the last columns. ``cols`` are each row's prediction columns: the last verified
        # token, the drafts after it, then the masks. Only the union of those columns goes through the LM head
        # (a long left-aligned prefill would otherwise materialise logits for every prompt position).
        mask_cols = list(range(width, block))
        cols = [[n - m - 1 + min(j, m) for j in range(max_draft + 1)] + mask_cols for n, m in zip(lens, drafts)]
        needed = sorted({c for row in cols for c in row})
        contiguous = needed[0] + len(needed) == block
        where = {c: i for i, c in enumerate(needed)}
        plane = block + 2
        sel_rows = [[where[c] for c in row] for row in cols]
        gather = any(r != sel_rows[0] for r in sel_rows) or sel_rows[0] != list(range(len(needed)))
        ids, block_mask, positions, sel, info = [], [], [], [], []
        for p, n, m, start, row, r in zip(pending, lens, drafts, pos, sel_rows, reach):
            pad = width - n
            ids.append(p + [filler] * pad + [mask_token_id] * n_masks + [0, 0])
            block_mask.append([1] * n + [0] * pad + [1] * n_masks + [0, 0])
            positions.append(list(range(start, start + n)) + [start] * pad
                             + list(range(start + n, start + n + n_masks)) + [0, 0])
            sel.append(row + [0] * (plane - n_sel))
            # [number of verify drafts, number of verified tokens fed, masks the row may use, the drafts...]
            info.append([m, n - m, r] + p[n - m:] + [-1] * (plane - 3 - m))
        planes = [ids, block_mask, positions, sel, info]
        if not contiguous:
            planes.append([needed + [0] * (plane - len(needed))] * len(ids))
        inputs = torch.tensor(planes, dtype=torch.long).to(device, non_blocking=True)
        block_mask_t = inputs[1, :, :block]
        attn_full = torch.cat([attn, block_mask_t], dim=1)
        keep = block - needed[0] if contiguous else inputs[5, 0, :len(needed)]

        if profile:
            _sync(device)
            t0 = time.perf_counter()
        pass_mask = model_pass_mask(model, attn_full, block)
        logits = model(input_ids=inputs[0, :, :block], attention_mask=pass_mask, position_ids=inputs[2, :, :block],
                       past_key_values=cache, use_cache=True, logits_to_keep=keep).logits
        model_calls += 1
        if profile:
            _sync(device)
            t_forward += time.perf_counter() - t0
        if n_masks:
            cache.crop(-n_masks)  # mask KV entries are never kept (METHOD.md step 4)

        sel_t = inputs[3, :, :n_sel]
        if gather:  # else the kept columns already are every row's [last verified | drafts | masks]
            logits = logits.gather(1, sel_t[:, :, None].expand(-1, -1, logits.shape[-1]))
        pred = logits.argmax(dim=-1)  # [B, n_sel]
        if strategy == "static":
            count = static_accept(n_masks + 1, k=min(k, n_masks + 1))
            host = pred.tolist()
            chunks = [row[:count] for row in host]
            kept_mask = block_mask_t[:, :width]
            new_pending = chunks
            new_drafts = [0] * len(active)
            fed_real = lens
        elif strategy == "conf_adapt":
            top_p = logits.float().softmax(dim=-1).amax(dim=-1)
            counts = conf_adapt_accept(top_p, threshold=threshold)
            if mask_margin is not None:
                counts = torch.minimum(counts, inputs[4, :, 2] + 1)
            host = torch.cat([pred, counts[:, None]], dim=1).tolist()
            chunks = [row[:row[-1]] for row in host]
            kept_mask = block_mask_t[:, :width]
            new_pending = chunks
            new_drafts = [0] * len(active)
            fed_real = lens
        else:
            m_t, verified = inputs[4, :, 0], inputs[4, :, 1]
            target = pred[:, :max_draft + 1]
            accepted = verify_accept(inputs[4, :, 3:3 + max_draft], target, m_t)
            correction = target.gather(1, accepted[:, None])
            mask_pred = pred[:, max_draft + 1:]
            if n_masks:
                mask_p = logits[:, max_draft + 1:].float().softmax(dim=-1).amax(dim=-1)
                n_new = draft_lengths(mask_p, threshold=threshold) * (accepted == m_t)
                if mask_margin is not None:
                    n_new = torch.minimum(n_new, inputs[4, :, 2])
            else:
                n_new = torch.zeros_like(accepted)
            # Rejected drafts become holes: keep the row's verified tokens and its accepted drafts only.
            cols = torch.arange(width, device=device)
            kept_mask = block_mask_t[:, :width] * (cols < (verified + accepted)[:, None])
            host = torch.cat([accepted[:, None], n_new[:, None], correction, mask_pred], dim=1).tolist()
            chunks, new_pending, new_drafts, fed_real = [], [], [], []
            for p, m, row in zip(pending, drafts, host):
                a, nn, corr = row[0], row[1], row[2]
                chunks.append(p[len(p) - m:len(p) - m + a] + [corr])
                new_pending.append([corr] + row[3:3 + nn])
                new_drafts.append(nn)
                fed_real.append(len(p) - m + a)
        attn = torch.cat([attn, kept_mask], dim=1)

        finished = []
        for b, i in enumerate(active):
            pos[b] += fed_real[b]
            out = outputs[i]
            prev = len(out)
            chunk = chunks[b][:max_new_tokens - prev]
            reason = None
            for j, tok in enumerate(chunk):
                if tok in eos_ids:
                    chunk = chunk[:j + 1]  # keep the EOS, drop what the same pass predicted after it
                    reason = "eos"
                    break
            out.extend(chunk)
            if stopper is not None:
                end = stopper.end_of(out, prev)
                if end is not None:
                    del out[end:]
                    reason = "stop_string"
            per_pass[i].append(len(out) - prev)
            if reason is None and len(out) >= max_new_tokens:
                reason = "length"
            if reason is not None:
                reasons[i] = reason
                finished.append(b)
            else:
                # Verify drafts beyond the budget could never be emitted: drop them now.
                budget = max_new_tokens - len(out)
                if new_drafts[b] > budget - 1:
                    new_pending[b] = new_pending[b][:budget]
                    new_drafts[b] = budget - 1
                if mask_margin is not None:
                    used = new_drafts[b] if strategy == "verify" else len(chunks[b]) - 1
                    reach[b] = min(num_masks, used + mask_margin)
        pending, drafts = new_pending, new_drafts
        if finished:
            keep = [b for b in range(len(active)) if b not in set(finished)]
            if not keep:
                break
            active = [active[b] for b in keep]
            pending = [pending[b] for b in keep]
            drafts = [drafts[b] for b in keep]
            reach = [reach[b] for b in keep]
            pos = [pos[b] for b in keep]
            attn = _drop_rows(cache, attn, keep)

    t_total = time.perf_counter() - t_start
    texts = None
    if tokenizer is not None:
        texts = [tokenizer.decode(seq, skip_special_tokens=True) for seq in outputs]
        if stopper is not None:
            texts = [stopper.cut_text(t) for t in texts]
    timings = {"forward_s": t_forward, "total_s": t_total, "other_s": t_total - t_forward} if profile else {}
    passes = [len(p) for p in per_pass]
    return MTPOutput(sequences=outputs, forward_passes=passes,
                     tokens_per_forward=[len(s) / p for s, p in zip(outputs, passes)],
                     finish_reasons=reasons, tokens_per_pass=per_pass, texts=texts, model_calls=model_calls,
                     timings=timings)


def model_pass_mask(model, slot_mask: torch.Tensor, query_len: int) -> torch.Tensor:
    """The attention mask :func:`mtp_generate` hands ``model`` for a pass of ``query_len`` queries.

    Its own 4-D mask (:func:`pass_attention_mask`) for more than one query under sdpa/eager; else the 2-D
    ``slot_mask`` ``[B, K]`` as is: one query is transformers' cheap path, and e.g. flash attention takes 2-D only.
    """
    impl = getattr(model.config, "_attn_implementation", None)
    if query_len > 1 and impl in DENSE_MASK_IMPLEMENTATIONS:
        return pass_attention_mask(slot_mask, query_len, attn_implementation=impl, dtype=model.dtype)
    return slot_mask


def pass_attention_mask(slot_mask: torch.Tensor, query_len: int, *, attn_implementation: str,
                        dtype: torch.dtype) -> torch.Tensor:
    """The 4-D attention mask of one pass, built here so the model does not rebuild it from the 2-D one.

    The last ``query_len`` slots are this pass's queries; query ``i`` may attend key slot ``j`` iff ``j`` is not
    after it (causal by slot) and ``slot_mask[b, j]`` is 1, exactly what ``transformers`` derives from a 2-D
    mask, minus its per-call construction cost (measurable for more than one query on a small model).

    Args:
        slot_mask: ``[B, K]``, 1 (or True) for the key slots a row may see: cache slots, then this pass's.
        query_len: ``q <= K``.
        attn_implementation: ``"sdpa"`` (boolean mask, True = attend) or ``"eager"`` (additive float mask).
        dtype: the model's dtype, for the eager mask.

    Returns:
        ``bool[B, 1, q, K]`` (sdpa) or ``dtype[B, 1, q, K]`` (eager).
    """
    keys = slot_mask.shape[1]
    causal = torch.ones(query_len, keys, dtype=torch.bool, device=slot_mask.device).tril(keys - query_len)
    allowed = causal[None, None] & slot_mask.bool()[:, None, None, :]
    return dense_mask_for(allowed, attn_implementation=attn_implementation, dtype=dtype)


def _drop_rows(cache: DynamicCache, attn: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Keep batch rows ``keep`` of the cache and slot mask, then compact slots that are holes in every row."""
    index = torch.tensor(keep, dtype=torch.long, device=attn.device)
    cache.batch_select_indices(index)
    attn = attn[index]
    used = attn.any(dim=0)
    if not bool(used.all()):
        slots = used.nonzero().squeeze(-1)
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(-2, slots)
            layer.values = layer.values.index_select(-2, slots)
        attn = attn[:, slots]
    return attn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
