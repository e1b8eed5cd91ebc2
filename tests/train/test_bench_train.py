"""scripts/bench_train.py as a user runs it: the shared option parser, bad options refused before any work, and a
tiny end-to-end run (SFT, full-fine-tune distillation and gated-LoRA distillation, each in its own spawned process)
that writes its record."""

import json
import subprocess
import sys

import pytest

from selfdistill.train import bench as bench_train
from support import REPO


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps"),
    (["--arch", "gpt2"], "--arch must be llama or qwen3"),
    (["--seq_len", "161"], "multiple of"),
    (["--device", "gpu"], "unknown device"),
    (["--modes", "sft", "dpo"], "--modes must be some of"),
    (["--dtype", "float8"], "--dtype must be one of"),
    (["--model", "/no/such/folder"], "/no/such/folder"),
])
def test_bad_options_are_usage_errors(argv, message, capsys):
    bench = bench_train
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_run_writes_its_record(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "bench_train.py"), "--hidden_size", "32", "--num_layers", "1",
           "--vocab_size", "128", "--batch_size", "2", "--seq_len", "40", "--k", "3", "--steps", "1", "--warmup", "0",
           "--device", "cpu", "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert set(record["results"]) == {"sft", "distill", "distill_gated", "distill_gated_packed"}
    assert record["settings"]["hidden_size"] == 32
    assert record["ratios"]["distill_over_sft"]["time"] > 0 and record["provenance"]["commit"]
    # gated LoRA trains the adapters and the mask row only; the other modes train every weight
    trainable = {m: r["trainable_params_m"] for m, r in record["results"].items()}
    assert trainable["distill_gated"] == trainable["distill_gated_packed"] < trainable["sft"] == trainable["distill"]
    assert trainable["sft"] == record["results"]["sft"]["params_m"]
