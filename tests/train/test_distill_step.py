"""The two-pass distillation step: student forcing, what the teacher sees, EOS pruning, step-0 sanity."""

import copy

import pytest
import torch

from selfdistill.train.distill_step import (distill_step, first_stop_index, gather_inputs, global_count_scale,
                                           region_keep, student_force)
from selfdistill.train.layout import build_layout
from selfdistill.train.losses import token_ce
from selfdistill.models.mask_token import mask_token_id_from
from selfdistill.models.tiny import tiny_model

EOS = 95  # tiny models: vocab 97, eos/pad = 95, mask = 96


def _raw(b, n, seed=0):
    return torch.randint(0, EOS, (b, n), generator=torch.Generator().manual_seed(seed))


def test_student_forcing_writes_mask_slots_only():
    lay = build_layout(18, 3, 3)
    raw = _raw(2, lay.num_source_tokens)
    ids = gather_inputs(raw, lay, 96)
    assert (ids[:, lay.is_mask] == 96).all()
    proposals = torch.arange(2 * 3 * 3).reshape(2, 3, 3) + 100
    forced = student_force(ids, lay, proposals)
    # region r's masks (slots 4,5 / 10,11 / 16,17) get y'_1, y'_2; y'_3 (the k-th) appears nowhere
    assert forced[:, [4, 5]].tolist() == proposals[:, 0, :2].tolist()
    assert forced[:, [10, 11]].tolist() == proposals[:, 1, :2].tolist()
    assert forced[:, [16, 17]].tolist() == proposals[:, 2, :2].tolist()
    assert not torch.isin(proposals[:, :, 2], forced).any()
    assert torch.equal(forced[:, ~lay.is_mask], ids[:, ~lay.is_mask])
    assert (ids[:, lay.is_mask] == 96).all()  # input not modified in place


def test_gather_inputs_rejects_short_windows():
    lay = build_layout(18, 3, 3)
    with pytest.raises(ValueError, match="needs 15"):
        gather_inputs(_raw(1, 14), lay, 96)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_teacher_sees_prefix_plus_student_chunk(arch, impl):
    student = tiny_model(arch, attn_implementation=impl, seed=1)
    teacher = tiny_model(arch, attn_implementation=impl, seed=2)
    lay = build_layout(24, 4, 3, offset=2)
    raw = _raw(2, lay.num_source_tokens, seed=3)
    out = distill_step(student, teacher, raw, layout=lay, mask_token_id=96)
    tol = dict(rtol=0, atol=1e-10) if impl == "sdpa" else dict(rtol=1e-5, atol=1e-5)
    for r in range(3):
        end = int(lay.src_index[lay.pred_slots[r, 0]]) + 1
        mask_run = torch.full((2, 3), 96)
        with torch.no_grad():
            alone_s = student(input_ids=torch.cat([raw[:, :end], mask_run], 1)).logits[:, -4:]
            seq = torch.cat([raw[:, :end], out.proposals[:, r, :3]], 1)  # prefix + y'_1..y'_3
            alone_t = teacher(input_ids=seq).logits[:, -4:]
        torch.testing.assert_close(out.student_logits[:, r].detach(), alone_s, **tol)
        assert torch.equal(out.proposals[:, r], alone_s.argmax(-1))
        torch.testing.assert_close(out.teacher_logits[:, r], alone_t, **tol)
    # targets are the ground-truth next tokens of each chunk
    assert torch.equal(out.targets[:, 0], raw[:, 3:7])


def test_eos_pruning_keeps_region_containing_first_stop():
    lay = build_layout(18, 3, 3)  # region targets: [4..6], [8..10], [12..14]
    raw = _raw(2, lay.num_source_tokens)
    raw[0, 9] = EOS  # inside region 1's targets -> keep regions 0, 1
    raw[1, 7] = EOS  # between region 0 and 1 targets -> region 1 starts after it -> keep region 0 only
    raw[1, 12] = EOS  # a later EOS changes nothing
    first = first_stop_index(raw, stop_token_ids=(EOS,))
    assert first.tolist() == [9, 7]
    assert region_keep(lay, first).tolist() == [[True, True, False], [True, False, False]]
    # padding marked invalid prunes too, with or without stop ids
    valid = torch.ones_like(raw, dtype=torch.bool)
    valid[0, 5:] = False
    assert region_keep(lay, first_stop_index(raw, valid=valid)).tolist()[0] == [True, False, False]
    # nothing pruned without stops; position 0 is never a target
    raw[:, 0] = EOS
    assert region_keep(lay, first_stop_index(raw)).all()


def test_stop_ids_on_the_prompt_side_of_a_chat_row_do_not_end_it():
    raw = _raw(1, 16)
    raw[0, 3] = EOS  # a chat turn end inside the prompt (tokens 0..5)
    raw[0, 11] = EOS  # the row's own end, on the target side
    target_side = torch.arange(16)[None] >= 6
    assert first_stop_index(raw, stop_token_ids=(EOS,)).tolist() == [3]
    assert first_stop_index(raw, stop_token_ids=(EOS,), stop_mask=target_side).tolist() == [11]
    valid = torch.ones_like(raw, dtype=torch.bool)
    valid[0, 2:] = False  # padding still ends the row wherever it is
    assert first_stop_index(raw, stop_token_ids=(EOS,), valid=valid, stop_mask=target_side).tolist() == [2]


def test_completion_only_keeps_regions_whose_first_target_is_a_completion_token():
    lay = build_layout(18, 3, 3)  # first targets of the regions: 4, 8, 12
    raw = _raw(2, lay.num_source_tokens)
    completion = torch.zeros_like(raw, dtype=torch.bool)
    completion[0, 8:] = True  # prompt = raw[0, :8]: region 0 predicts prompt tokens 4..6
    completion[1, 4:] = True  # prompt ends right before region 0's first target: all count
    n = raw.shape[1]
    no_stop = torch.full((2,), n)
    assert region_keep(lay, no_stop, completion).tolist() == [[False, True, True], [True, True, True]]
    # combined with EOS pruning: both must hold
    assert region_keep(lay, torch.tensor([9, n]), completion).tolist() == [[False, True, False], [True, True, True]]
    student, teacher = tiny_model(seed=1), tiny_model(seed=2)
    out = distill_step(student, teacher, raw, layout=lay, mask_token_id=96, target_mask=completion, ntp_weight=1.0)
    assert out.keep.tolist() == [[False, True, True], [True, True, True]]
    kept = out.keep[:, :, None].expand(-1, -1, 3)
    ce = token_ce(out.student_logits, out.teacher_logits.argmax(-1))
    ntp_sum, ntp_count = out.stats["ntp_loss"]
    torch.testing.assert_close(out.loss - ntp_sum / ntp_count, ce[kept].mean())


def test_pruned_regions_do_not_touch_the_loss():
    student, teacher = tiny_model(seed=1), tiny_model(seed=2)
    lay = build_layout(18, 3, 3)
    raw = _raw(1, lay.num_source_tokens)
    raw[0, 9] = EOS
    out = distill_step(student, teacher, raw, layout=lay, mask_token_id=96, stop_token_ids=(EOS,))
    assert out.keep.tolist() == [[True, True, False]]
    expect = token_ce(out.student_logits[:, :2], out.teacher_logits[:, :2].argmax(-1)).mean()
    torch.testing.assert_close(out.loss, expect)
    assert out.stats["agree_run"][1].item() == 2


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_step0_k1_teacher_equals_student(arch):
    student = tiny_model(arch, seed=4)
    teacher = copy.deepcopy(student).requires_grad_(False)
    lay = build_layout(18, 1, 3)
    raw = _raw(2, lay.num_source_tokens)
    soft = distill_step(student, teacher, raw, layout=lay, mask_token_id=96, loss_mode="soft_kl")
    assert soft.loss.item() == 0.0
    hard = distill_step(student, teacher, raw, layout=lay, mask_token_id=96)
    assert torch.equal(hard.student_logits.detach(), hard.teacher_logits)
    assert hard.stats["agree_slot1"][0].item() == hard.stats["agree_slot1"][1].item() == 6
    hard.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_gt_mode_needs_no_teacher_and_ntp_matches_plain_pass():
    student = tiny_model(seed=5)
    lay = build_layout(18, 3, 3, offset=1)
    raw = _raw(2, lay.num_source_tokens)
    out = distill_step(student, None, raw, layout=lay, mask_token_id=96, loss_mode="gt_ce", ntp_weight=0.5)
    assert out.teacher_logits is None and out.forced_ids is None
    gt = token_ce(out.student_logits, out.targets).mean()
    with torch.no_grad():
        plain = student(input_ids=raw[:, :-1]).logits
    n_real = int((~lay.is_mask).sum())  # 12 real tokens -> targets 1..12
    ntp = token_ce(plain[:, :n_real], raw[:, 1:n_real + 1]).mean()
    torch.testing.assert_close(out.loss.detach(), gt + 0.5 * ntp)
    with pytest.raises(ValueError, match="needs a teacher"):
        distill_step(student, None, raw, layout=lay, mask_token_id=96)


def test_global_count_scale_is_local_over_mean_count_and_zero_where_nobody_has_items():
    counts = torch.tensor([2.0, 0.0, 3.0], dtype=torch.float64)
    scale = global_count_scale(counts, lambda c: torch.tensor([4.0, 0.0, 1.5], dtype=torch.float64))
    assert scale.tolist() == [0.5, 0.0, 2.0]


def test_mask_id_matches_tiny_model():
    assert mask_token_id_from(tiny_model()) == 96


def test_count_mean_makes_per_process_gradients_average_to_the_global_batch_gradient():
    """Two "processes" keep different numbers of regions and NTP targets; with ``count_mean`` the average of
    their gradients (what DDP all-reduces) is the gradient of the whole batch's mean, and so is the loss."""
    student = tiny_model(seed=5, dtype=torch.float64)
    teacher = copy.deepcopy(student).requires_grad_(False)
    with torch.no_grad():  # a teacher that differs from the student, so the distillation term has gradients
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    lay = build_layout(24, 3, 3, offset=1)
    raw = _raw(4, lay.num_source_tokens, seed=6)
    raw[0, 6] = EOS  # window 0 keeps one region
    raw[1, 11] = EOS  # window 1 keeps two
    completion = torch.ones_like(raw, dtype=torch.bool)
    completion[3, :10] = False  # window 3: the prompt covers its first regions' targets
    kw = dict(layout=lay, mask_token_id=96, stop_token_ids=(EOS,), ntp_weight=0.7, entropy_beta=0.1)

    def grads(rows, count_mean=None):
        student.zero_grad()
        out = distill_step(student, teacher, raw[rows], target_mask=completion[rows], count_mean=count_mean, **kw)
        out.loss.backward()
        return out.loss.detach(), [p.grad.clone() for p in student.parameters()]

    full_loss, full_grads = grads(slice(0, 4))
    shares = [slice(0, 2), slice(2, 4)]
    counts = []
    for rows in shares:  # first learn each process's counts (identity mean: no rescaling)
        grads(rows, count_mean=lambda c: counts.append(c) or c)
    assert not torch.equal(counts[0], counts[1])  # the two shares really are uneven
    mean = (counts[0] + counts[1]) / 2
    per_process = [grads(rows, count_mean=lambda c: mean) for rows in shares]
    torch.testing.assert_close((per_process[0][0] + per_process[1][0]) / 2, full_loss)
    for j, g in enumerate(full_grads):
        torch.testing.assert_close((per_process[0][1][j] + per_process[1][1][j]) / 2, g)
    # without it, the average of per-process means is not the global mean on such shares
    plain = [grads(rows)[0] for rows in shares]
    assert not torch.allclose((plain[0] + plain[1]) / 2, full_loss)
