"""Training learns: a short run of the shipped demo recipe (``configs/tiny.yaml``: the tiny teacher on the synthetic
world) lowers the distillation loss and raises slot-2 agreement with the teacher, gated LoRA and full fine-tune.

Chunks are fixed at k = 2 so every region trains slot 2. Measured once (2-core AMD EPYC, fp32, 80 steps): gated
LoRA loss 4.41 -> 1.61 (mean of the last three logs), slot-2 agreement 0.13 -> 0.25; full fine-tune loss 5.09 ->
2.36, slot 2 0.12 -> 0.29. An untrained student stays near the first log (slot 2 ~0.13), so the floors below
separate learning from its absence with room for other CPUs' rounding.
"""

import statistics

import pytest

from selfdistill.train.compare import read_metrics
from selfdistill.train.online_distill import parse_config, run_online_distill

SLOT2_FLOOR = 0.2  # slot-2 agreement over the last 30 steps, against ~0.13 at the start
LOSS_RATIO = 0.6  # the last 30 steps' mean loss is at most this share of the first 10 steps'


@pytest.mark.slow
@pytest.mark.parametrize("adapter, extra", [("gated_lora", []),
                                            ("none", ["--ntp_weight", "4", "--learning_rate", "1e-3"])])
def test_a_short_run_lowers_the_loss_and_raises_slot2_agreement(adapter, extra, tmp_path):
    cfg = parse_config(["--output_dir", str(tmp_path), "--max_steps", "80", "--logging_steps", "10",
                        "--synthetic_rows_per_subtask", "100", "--save_strategy", "no", "--eval_strategy", "no",
                        "--disable_tqdm", "true", "--k_min", "2", "--k_max", "2", "--warmup_steps", "5",
                        "--adapter", adapter, *extra])
    run_online_distill(cfg)
    logs = read_metrics(str(tmp_path))  # the logged training steps of metrics.jsonl
    assert [r["step"] for r in logs] == list(range(10, 81, 10))
    first, last = logs[0], logs[-3:]
    last_loss = statistics.fmean(float(r["loss"]) for r in last)
    noise = statistics.stdev(float(r["loss"]) for r in last)
    assert last_loss < LOSS_RATIO * float(first["loss"]), (first["loss"], last_loss)
    assert float(first["loss"]) - last_loss > 5 * noise  # a fall, not the spread between steps
    slot2 = statistics.fmean(float(r["agree_slot2"]) for r in last)
    assert slot2 > SLOT2_FLOOR > float(first["agree_slot2"]), (first["agree_slot2"], slot2)
