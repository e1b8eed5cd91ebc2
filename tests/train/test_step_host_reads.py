"""The distillation step reads nothing back from the device (#33 item 3): no ``.item``/``.tolist``/``float()``, no
``nonzero`` and no boolean-mask indexing (a ``nonzero`` inside), in the gated step with the shared prefix or packed,
and in the full fine-tune with the prefix NTP term. On a GPU each such read is a host sync; on this CPU they are
counted by :class:`support.HostReads`. The trainer's own reads per optimizer step are stated in
``tests/train/test_distill_trainer.py``."""

import copy

import pytest
import torch

from selfdistill.models import gated_lora as gl
from selfdistill.models.tiny import tiny_model
from selfdistill.train.distill_step import distill_step
from selfdistill.train.layout import build_layout
from support import HostReads

MASK, EOS = 96, 95  # tiny models: vocab 97


def _gated():
    model = tiny_model("llama", attn_implementation="sdpa", seed=0, dtype=torch.float32)
    gl.apply_gated_lora(model, gl.GatedLoRAConfig(rank=2, alpha=4.0), mask_token_id=MASK)
    return model.train()


@pytest.mark.parametrize("loss_mode", ["hard_ce", "soft_kl"])
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_a_gated_step_reads_nothing_back(shared_prefix, loss_mode):
    model, layout = _gated(), build_layout(40, 3, 4, offset=1)
    raw = torch.randint(0, EOS, (2, 60), generator=torch.Generator().manual_seed(0))
    raw[1, 30] = EOS  # a pruned region: keep is not all True
    with HostReads() as reads:
        out = distill_step(model, gl.BaseModelView(model), raw, layout=layout, mask_token_id=MASK,
                           loss_mode=loss_mode, stop_token_ids=(EOS,), shared_prefix=shared_prefix)
        out.loss.backward()
    assert dict(reads.counts) == {}
    assert not out.keep.all() and out.keep.any()  # the pruned region was dropped without a boolean index


def test_a_full_fine_tune_step_with_the_ntp_term_reads_nothing_back():
    student = tiny_model("llama", attn_implementation="sdpa", seed=0, dtype=torch.float32).train()
    teacher = copy.deepcopy(student).eval()
    raw = torch.randint(0, EOS, (2, 60), generator=torch.Generator().manual_seed(1))
    layout = build_layout(40, 4, 4, offset=2)  # built once per shape, before any step
    with HostReads() as reads:
        out = distill_step(student, teacher, raw, layout=layout, mask_token_id=MASK,
                           ntp_weight=0.5, stop_token_ids=(EOS,))
        out.loss.backward()
    assert dict(reads.counts) == {} and "ntp_loss" in out.stats


def test_the_spy_sees_the_reads_it_counts():
    x = torch.arange(6.0)
    with HostReads() as reads:
        x[x > 2], x.nonzero(), x.tolist(), float(x[0]), bool(x[1] > 0)
    assert dict(reads.counts) == {"bool_index": 1, "nonzero": 1, "tolist": 1, "__float__": 1, "__bool__": 1}
