"""Two CPU processes (DDP over gloo, launched with ``accelerate launch``) == one process on the same global batch.

Run as a script by the test itself: ``accelerate launch --config_file configs/accelerate/cpu_ddp_2proc.yaml
tests/test_distill_ddp.py OUT_DIR PER_DEVICE_BATCH`` (the worker's config sets ``use_cpu``).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GLOBAL_BATCH = 4
STEPS = 3


def run_worker(out_dir: str, per_device_batch: int) -> None:
    """Distil a tiny random Llama for a few steps and leave losses and final weights in ``out_dir``."""
    sys.path.insert(0, HERE)
    from test_distill_trainer import _cfg, _model, _rows, _tokenizer
    from selfdistill.distill_trainer import run_distillation
    from selfdistill.training_data import training_windows

    tokenizer = _tokenizer()
    cfg = _cfg(out_dir, max_steps=STEPS, per_device_train_batch_size=per_device_batch, save_strategy="no",
               k_min=1, k_max=4)
    train = training_windows(_rows(), tokenizer, window=cfg.window_tokens, packing=True)
    train = train.select(range(len(train) - 1))
    trainer = run_distillation(cfg, model=_model(tokenizer), tokenizer=tokenizer, train_dataset=train)
    assert trainer.args.world_size == int(os.environ.get("WORLD_SIZE", 1))  # really distributed when launched
    if trainer.is_world_process_zero():
        logs = [h for h in trainer.state.log_history if "loss" in h]
        with open(os.path.join(out_dir, "logs.json"), "w") as f:
            json.dump(logs, f)


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "TOKENIZERS_PARALLELISM": "false"}
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           os.path.join(REPO, "configs", "accelerate", "cpu_ddp_2proc.yaml"), "--main_process_port", "29517",
           __file__, str(ddp_dir), str(GLOBAL_BATCH // 2)]
    ddp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, __file__, str(single_dir), str(GLOBAL_BATCH)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    logs_ddp = json.loads((ddp_dir / "logs.json").read_text())
    logs_one = json.loads((single_dir / "logs.json").read_text())
    assert [h["step"] for h in logs_ddp] == [h["step"] for h in logs_one] == list(range(1, STEPS + 1))
    for a, b in zip(logs_ddp, logs_one):
        assert a["k_mean"] == b["k_mean"] and a["offset_mean"] == b["offset_mean"]  # same draws on every rank
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)  # all-reduced gradient == full-batch one
        assert a["agree_slot1"] == pytest.approx(b["agree_slot1"])  # metrics reduced over ranks
    from safetensors.torch import load_file

    w_ddp, w_one = load_file(ddp_dir / "model.safetensors"), load_file(single_dir / "model.safetensors")
    assert w_ddp.keys() == w_one.keys()
    for name in w_one:
        torch.testing.assert_close(w_ddp[name], w_one[name], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    run_worker(sys.argv[1], int(sys.argv[2]))
