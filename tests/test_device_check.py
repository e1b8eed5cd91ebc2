"""The device check's CPU side (the GPU parts run where a GPU is lent): the script's syntax and usage, the tree
size it guards (what the device tool sends must stay under 64 MiB), and a GPU part refused on a CPU-only torch."""

import json
import subprocess
from pathlib import Path

import pytest
import torch

from selfdistill.eval import device_check

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.sh"


def test_the_script_parses_and_refuses_extra_arguments(tmp_path):
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    bad = subprocess.run(["bash", str(SCRIPT), "a", "b"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_the_cpu_only_part_measures_the_tree_under_the_transfer_limit(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--cpu-only", str(tmp_path)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(Path(__import__("sys").executable))})
    record = json.loads((tmp_path / "tree.json").read_text())
    assert record["bytes"] == device_check.tree_bytes() and record["limit"] == 64 << 20
    assert record["ok"] and done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only torch")
def test_a_gpu_part_is_refused_without_cuda(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        device_check.main(["gated_pass", "--device", "cuda", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "sees no CUDA device" in capsys.readouterr().err
