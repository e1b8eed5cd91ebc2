"""Device and precision defaults (#33 item 1): nothing names a device, a GPU gets bf16, the CPU stays fp32.

The resolution functions take the device (and for training CUDA's answers) as arguments, so the GPU cases run here
on a CPU with the device faked at the function, never by patching torch."""

import glob
import os

import pytest

from selfdistill.cli import parse_config
from selfdistill.models.loader import default_dtype, resolve_run_dtype
from selfdistill.train.config import DistillConfig, default_bf16
from support import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))


@pytest.mark.parametrize("device, dtype", [("cuda", "bfloat16"), ("cuda:1", "bfloat16"), ("cpu", "float32"),
                                           ("mps", "float32")])
def test_decoding_defaults_to_bf16_on_cuda_and_fp32_elsewhere(device, dtype):
    assert default_dtype(device) == dtype == resolve_run_dtype(None, device=device)
    assert resolve_run_dtype("float64", device=device) == "float64"  # a given dtype is kept
    assert resolve_run_dtype("auto", device=device) == "auto"  # the checkpoint's own


def test_an_unknown_dtype_or_device_is_refused():
    with pytest.raises(ValueError, match="float7"):
        resolve_run_dtype("float7", device="cpu")
    with pytest.raises(ValueError, match="tpu"):
        default_dtype("tpu")


@pytest.mark.parametrize("asked, expected", [
    (dict(cuda=True, cuda_bf16=True), True),
    (dict(cuda=True, cuda_bf16=False), False),  # a GPU without bf16 (before Ampere)
    (dict(cuda=False), False),
    (dict(cuda=True, cuda_bf16=True, use_cpu=True), False),
    (dict(cuda=True, cuda_bf16=True, fp16=True), False),
    (dict(cuda=True, cuda_bf16=True, env={"ACCELERATE_USE_CPU": "true"}), False),  # accelerate's CPU config
])
def test_training_precision_default(asked, expected):
    assert default_bf16(**({"use_cpu": False, "env": {}} | asked)) is expected


@pytest.mark.parametrize("path", CONFIGS)
def test_no_shipped_config_names_a_device(path):
    text = open(path, encoding="utf-8").read()
    assert "use_cpu:" not in text and "no_cuda:" not in text


def test_a_run_resolves_bf16_once_and_an_explicit_value_wins(tmp_path, monkeypatch):
    tiny = os.path.join(REPO, "configs", "tiny.yaml")

    def parse(*extra):
        return parse_config(DistillConfig, ["--config", tiny, "--output_dir", str(tmp_path), *extra])

    monkeypatch.setattr("selfdistill.train.config.default_bf16", lambda **kw: False)  # as on a CPU
    assert parse().bf16 is False and parse("--bf16", "true").bf16 is True
    monkeypatch.setattr("selfdistill.train.config.default_bf16", lambda **kw: True)  # as on a GPU with bf16
    assert parse().bf16 is True and parse("--bf16", "false").bf16 is False


def test_entry_points_resolve_their_dtype_from_the_device(tmp_path):
    from selfdistill.eval import bench_decode, onpolicy_data, pareto
    from selfdistill.train import bench as bench_train

    out = str(tmp_path / "out")

    def pareto_cfg(*args):
        return parse_config(pareto.ParetoConfig, ["--output_dir", out, *args], check=pareto.check_config)

    assert pareto_cfg("--device", "cpu").dtype == "float32" and pareto_cfg("--device", "cuda").dtype == "bfloat16"
    assert pareto_cfg("--dtype", "float64", "--device", "cuda").dtype == "float64"
    assert parse_config(bench_decode.BenchConfig, ["--out", out, "--device", "cpu"],
                        check=bench_decode.check_args).dtype == "float32"
    assert parse_config(bench_train.TrainBenchConfig, ["--out", out, "--device", "cpu"],
                        check=bench_train.check_args).dtype == "float32"
    assert parse_config(onpolicy_data.OnPolicyConfig, ["--out", out, "--model", "tiny-teacher", "--device", "cpu"],
                        check=onpolicy_data.check_config).dtype == "float32"
