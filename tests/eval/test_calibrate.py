"""Collecting calibration samples (selfdistill/eval/calibrate.py): the all-anchors pass against the decoder's pass
run alone without a cache, in float64 with sdpa and eager, full and gated models; the recipe end to end."""

import json
import shutil

import pytest
import torch

from selfdistill.eval.calibrate import CalibrateConfig, check_config, run_calibration, slot_predictions, slot_samples
from selfdistill.models.calibration import FILE, calibration_from
from selfdistill.models.loader import load_model, resolve_model_path
from selfdistill.models.mask_token import mask_token_id_from
from support import attach_random_adapter

TEXT = "Question: Tom has 3 apples and gets 5 more. How many apples does he have?\nAnswer: 3 + 5 = 8"


def _naive(model, ids, t, k, mask_id):
    """The decoder's pass at anchor ``t`` alone: ids[:t+1] and k masks, one plain causal forward, no cache."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:t + 1] + [mask_id] * k])).logits[0, -k:]
    return logits.float().softmax(-1).max(-1)  # float32 confidences, as the decoder computes them


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("gated", [False, True])
def test_all_anchors_at_once_equal_each_pass_alone(attn, gated):
    model, tok = load_model("tiny-student" if not gated else "tiny-teacher", dtype="float64",
                            attn_implementation=attn)
    if gated:
        attach_random_adapter(model, tok, std=0.5)
    mask_id = mask_token_id_from(model)
    ids = tok(TEXT, add_special_tokens=False).input_ids
    start, k = len(ids) - 9, 3
    conf, pred, target = slot_predictions(model, ids, start, n_masks=k, mask_token_id=mask_id, anchors_per_pass=4)
    assert conf.shape == (9, k)  # anchors start - 1 .. N - 2
    for g, t in enumerate(range(start - 1, len(ids) - 1)):
        want_conf, want_pred = _naive(model, ids, t, k, mask_id)
        torch.testing.assert_close(conf[g], want_conf, rtol=0, atol=1e-6)
        assert pred[g].tolist() == want_pred.tolist()
        assert target[g].tolist() == [ids[p] if p < len(ids) else -1 for p in range(t + 2, t + 2 + k)]
    samples = slot_samples(conf, pred, target)
    assert sorted(samples) == [2, 3, 4] and len(samples[2][0]) == 8 and len(samples[4][0]) == 6


def test_the_recipe_end_to_end(tmp_path):
    student = shutil.copytree(resolve_model_path("tiny-student"), tmp_path / "student")
    cfg = CalibrateConfig(model=str(student), suite="synthetic_dev", limit=2, max_new_tokens=24, k_max=4,
                          output_dir=str(tmp_path / "out"), name="cal", save_to_model=True, device="cpu")
    root = run_calibration(cfg)
    stats = json.loads((root / "calibration.json").read_text())
    assert list(stats["slots"]) == ["2", "3", "4"] and stats["meta"]["prompts"] == 10  # 5 subtasks x 2
    assert stats["meta"]["dtype"] == "float32"  # the CPU's default, resolved and recorded
    assert all(0 <= s["ece_raw"] <= 1 and s["n"] > 0 for s in stats["slots"].values())
    assert (root / "reliability.png").stat().st_size > 0 and "| slot |" in (root / "calibration.md").read_text()
    model, _ = load_model(str(student))
    assert calibration_from(model).max_slot == 4 and (student / FILE).is_file()


@pytest.mark.parametrize("change, message", [(dict(suite="gsm8k"), "never a test split"),
                                             (dict(method="histogram"), "--method"),
                                             (dict(k_max=1), "--k_max"), (dict(dtype="float7"), "float7"),
                                             (dict(device="tpu"), "tpu"),
                                             (dict(save_to_model=True, model="tiny-student-on-hub/x"), "local")])
def test_bad_options_are_named_before_loading(change, message):
    with pytest.raises(ValueError, match=message):
        check_config(CalibrateConfig(**({"model": "tiny-student"} | change)))
