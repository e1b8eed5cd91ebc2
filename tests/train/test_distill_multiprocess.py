"""Two CPU processes (gloo, launched with ``accelerate launch``) == one process on the same global batch.

The data-parallel modes the trainer supports, on CPU: DDP (``configs/accelerate/cpu_ddp_2proc.yaml``; a 2-layer
Llama fully fine-tuned, and a 2-layer Qwen3 with gated LoRA, whose adapter must train as in one process), FSDP2 full
sharding and DeepSpeed ZeRO-3, each with the shipped GPU settings (``configs/accelerate/fsdp_multi_gpu.yaml``,
``deepspeed_zero3.yaml``) cut down to two processes without bf16, each as a full fine-tune and with gated LoRA
(ZeRO-3 then partitions every parameter, however small, so the mask row and the adapters are empty outside the
forward). The DeepSpeed cases need ``pip install -e ".[deepspeed]"``, which README's test command installs (skipped
without it; DeepSpeed's CPU accelerator falls back to gloo without Intel oneCCL). The
rows are unpacked and completion-only, so the two processes keep different numbers of regions and NTP targets:
their losses must still average to the global batch mean (``distill_step``'s ``count_mean``).

accelerate (1.15 and 1.16 alike) enables FSDP only on GPU-like devices: ``AcceleratorState`` keeps an FSDP plugin for
``MULTI_GPU``/``MULTI_XPU``/... and not ``MULTI_CPU``, so on CPU an FSDP config silently runs DDP, and there is no
public switch. The FSDP worker therefore lets ``AcceleratorState`` keep the FSDP plugin on ``MULTI_CPU`` (torch's
``fully_shard`` itself works on a CPU mesh), a patch of accelerate internals that lives here only: it checks our
teacher wrapping, gated adapters, saves and resume under FSDP2. The patch is pinned to the accelerate versions it
was checked with (:data:`FSDP_PATCH_CHECKED`): there a failure to apply fails the test; on another version it skips,
saying so.

The test runs this file as the worker: ``accelerate launch --config_file CFG tests/train/test_distill_multiprocess.py
OUT_DIR PER_DEVICE_BATCH MODE`` (the worker's training config sets ``use_cpu``).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
GLOBAL_BATCH = 4
STEPS = 3
#: accelerate versions (major.minor) whose internals the CPU FSDP patch was checked against.
FSDP_PATCH_CHECKED = ("1.15", "1.16")


def _skip_unless_patch_checked(run: subprocess.CompletedProcess) -> None:
    """The worker exits 3 when the patch no longer applies: a failure on a checked version, a skip on another."""
    import accelerate

    if run.returncode != 0 and "exitcode  : 3" in run.stderr:
        version = ".".join(accelerate.__version__.split(".")[:2])
        assert version not in FSDP_PATCH_CHECKED, f"the CPU FSDP patch no longer applies to accelerate {version}"
        pytest.skip(f"the CPU FSDP patch was checked with accelerate {FSDP_PATCH_CHECKED}, not {version}")


def allow_fsdp_on_cpu() -> bool:
    """Patch accelerate so an FSDP config survives on CPU; False if its internals no longer look as expected."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    if not isinstance(getattr(PartialState, "_shared_state", None), dict):
        return False
    init = AcceleratorState.__init__

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # later AcceleratorState() copies it
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin

    AcceleratorState.__init__ = patched
    return True


def run_worker(out_dir: str, per_device_batch: int, mode: str, phase: str = "") -> None:
    """Distil a tiny random Llama for a few steps; leave losses and final weights in ``out_dir``. ``phase``:
    ``save`` also checkpoints at step 2; ``resume`` continues ``out_dir`` from its newest checkpoint."""
    if mode.startswith("fsdp2") and not allow_fsdp_on_cpu():
        sys.exit(3)
    sys.path[:0] = [HERE, TESTS]  # the worker runs outside pytest: its test helpers by path
    from test_distill_trainer import _cfg, _model, _rows, _tokenizer
    from selfdistill.train.run import run_distillation
    from selfdistill.train.data import training_windows

    tokenizer = _tokenizer()
    model = _model(tokenizer)  # before the config: under DeepSpeed ZeRO-3 a later from_config would partition it
    adapter = {}
    if mode.endswith("_qwen3"):  # gated LoRA on the other architecture: the teacher is the same weights, gate off
        from transformers import AutoModelForCausalLM

        from selfdistill.models.tiny import tiny_config

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config("qwen3", vocab_size=len(tokenizer),
                                                             eos_token_id=tokenizer.eos_token_id,
                                                             pad_token_id=tokenizer.pad_token_id))
        adapter = dict(adapter="gated_lora", lora_rank=4, lora_alpha=8.0, ntp_weight=0.0, k_min=2)
    elif "_gated" in mode:  # gated LoRA under sharding: the mask row and adapters gathered where they are used
        adapter = dict(adapter="gated_lora", lora_rank=4, lora_alpha=8.0, ntp_weight=0.0, k_min=2)
    saves = dict(save_strategy="steps", save_steps=2) if phase else dict(save_strategy="no")
    if phase == "resume":
        saves["resume_from_checkpoint"] = "true"
    cfg = _cfg(out_dir, max_steps=STEPS, per_device_train_batch_size=per_device_batch, **saves,
               seq_len=60, packing=False, completion_only_loss=True,
               **({"k_min": 1, "k_max": 4, "ntp_weight": 0.5} | adapter))
    rows = _rows(GLOBAL_BATCH * STEPS)
    # answers of 1-3 sentences: short rows end (EOS, then padding) inside the window, long ones fill it
    rows = rows.map(lambda row, i: {"solution": (row["solution"].split(" The")[0] + " ") * (i % 3) + row["solution"]},
                    with_indices=True)
    train = training_windows(rows, tokenizer, window=cfg.window_tokens, packing=False)
    trainer = run_distillation(cfg, model=model, tokenizer=tokenizer, train_dataset=train)
    world = int(os.environ.get("WORLD_SIZE", 1))
    assert trainer.args.world_size == world  # really distributed when launched
    if mode in ("fsdp2", "deepspeed") and world > 1:  # (gated: the teacher is the student's own base path)
        teacher = list(trainer.teacher.parameters())
        if mode == "fsdp2":
            from torch.distributed.tensor import DTensor

            assert trainer.accelerator.is_fsdp2
            assert all(isinstance(p, DTensor) for p in teacher)  # the teacher is sharded like the student
        else:
            assert trainer.is_deepspeed_enabled
            assert all(hasattr(p, "ds_id") for p in teacher)  # a ZeRO-3 engine, partitioned over the ranks
            assert sum(p.ds_tensor.numel() for p in teacher) < sum(p.ds_numel for p in teacher)
        in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        assert not any(id(p) in in_optimizer or p.requires_grad for p in teacher)
    if "_gated" in mode and not mode.startswith("ddp") and world > 1:  # really sharded: adapters and mask row too
        trained = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
        assert any(n.endswith("mask_embedding") for n in trained) and any("lora_A" in n for n in trained)
        if mode.startswith("deepspeed"):
            assert trainer.is_deepspeed_enabled and all(hasattr(p, "ds_id") for p in trained.values())
            assert all(p.ds_tensor.numel() < p.ds_numel for p in trained.values())  # each one partitioned
        else:
            from torch.distributed.tensor import DTensor

            assert trainer.accelerator.is_fsdp2 and all(isinstance(p, DTensor) for p in trained.values())
    if trainer.is_world_process_zero():
        logs = [h for h in trainer.state.log_history if "loss" in h]
        with open(os.path.join(out_dir, "logs.json"), "w") as f:
            json.dump(logs, f)
    if torch.distributed.is_initialized():  # end together and close the group: a rank that exits with its
        torch.distributed.barrier()  # communication threads alive can abort ("terminate called without an active
        torch.distributed.destroy_process_group()  # exception"), seen once in CI after a DeepSpeed checkpoint


def _launcher_config(mode: str, tmp_path) -> str:
    if mode.startswith("ddp"):
        return os.path.join(REPO, "configs", "accelerate", "cpu_ddp_2proc.yaml")
    shipped = {"fsdp2": "fsdp_multi_gpu.yaml", "deepspeed": "deepspeed_zero3.yaml"}[mode.split("_")[0]]
    with open(os.path.join(REPO, "configs", "accelerate", shipped)) as f:
        cfg = yaml.safe_load(f)
    cfg.update(num_processes=2, mixed_precision="no", use_cpu=False)
    if mode.startswith("fsdp2"):
        cfg["gpu_ids"] = "all"
    if mode.startswith("deepspeed_gated"):  # every parameter partitioned, however small (default: small ones whole)
        ds = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                    "stage3_gather_16bit_weights_on_model_save": True},
              "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
              "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
        (tmp_path / "ds_zero3.json").write_text(json.dumps(ds))
        cfg["deepspeed_config"] = {"deepspeed_config_file": str(tmp_path / "ds_zero3.json"), "zero3_init_flag": False}
        del cfg["mixed_precision"]  # the file decides it (accelerate refuses both)
    path = tmp_path / f"cpu_{mode}_2proc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _free_port() -> str:
    """A port the OS just gave out on 127.0.0.1 (not a fixed one another run may hold)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(mode: str, tmp_path, out_dir, *extra) -> subprocess.CompletedProcess:
    if mode.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "TOKENIZERS_PARALLELISM": "false",
           "DS_ACCELERATOR": "cpu"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", _launcher_config(mode, tmp_path),
           "--main_process_port", _free_port(), __file__, str(out_dir), str(GLOBAL_BATCH // 2), mode, *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp2_gated", "deepspeed_gated_qwen3"])
def test_a_sharded_gated_run_resumes_exactly(mode, tmp_path):
    # the adapter checkpoint of a sharded run (written from the gathered state dict) is loaded before sharding on
    # resume: step 3 of the resumed run and its final adapter equal the uninterrupted run's
    import shutil

    from safetensors.torch import load_file

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run = _launch(mode, tmp_path, whole, "save")
    if mode.startswith("fsdp2"):
        _skip_unless_patch_checked(run)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (whole / "checkpoint-2" / "gated_lora.safetensors").is_file()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    run = _launch(mode, tmp_path, resumed, "resume")
    assert run.returncode == 0, run.stderr[-3000:]
    step3 = [json.loads((d / "logs.json").read_text())[-1] for d in (whole, resumed)]
    assert step3[0]["step"] == step3[1]["step"] == STEPS
    for key in ("loss", "grad_norm", "agree_slot1"):
        assert step3[1][key] == pytest.approx(step3[0][key], rel=1e-6)
    a, b = (load_file(d / "gated_lora.safetensors") for d in (whole, resumed))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "ddp_gated_qwen3", "fsdp2", "fsdp2_gated", "deepspeed",
                                  "deepspeed_gated_qwen3"])
def test_two_processes_match_one_process(mode, tmp_path):
    port = _free_port()
    if mode.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, "TOKENIZERS_PARALLELISM": "false",
           "DS_ACCELERATOR": "cpu"}
    multi_dir, single_dir = tmp_path / mode, tmp_path / "single"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", _launcher_config(mode, tmp_path),
           "--main_process_port", port, __file__, str(multi_dir), str(GLOBAL_BATCH // 2), mode]
    multi = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if mode.startswith("fsdp2"):
        _skip_unless_patch_checked(multi)
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = subprocess.run([sys.executable, __file__, str(single_dir), str(GLOBAL_BATCH), mode], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    logs_multi = json.loads((multi_dir / "logs.json").read_text())
    logs_one = json.loads((single_dir / "logs.json").read_text())
    assert [h["step"] for h in logs_multi] == [h["step"] for h in logs_one] == list(range(1, STEPS + 1))
    for a, b in zip(logs_multi, logs_one):
        assert a["k_mean"] == b["k_mean"] and a["offset_mean"] == b["offset_mean"]  # same draws on every rank
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)  # global-batch mean despite uneven shares
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)  # all-reduced gradient == full-batch one
        assert a["agree_slot1"] == pytest.approx(b["agree_slot1"])  # metrics reduced over ranks
        assert ("ntp_loss" in a) == ("ntp_loss" in b) == ("gated" not in mode)  # gated: no NTP term
        if "ntp_loss" in b:
            assert a["ntp_loss"] == pytest.approx(b["ntp_loss"], rel=1e-5)
    from safetensors.torch import load_file

    if "gated" in mode:  # the adapter folder: the trained A/B and mask row, as one process trains them
        w_multi = load_file(multi_dir / "gated_lora.safetensors")
        w_one = load_file(single_dir / "gated_lora.safetensors")
        assert w_multi.keys() == w_one.keys()
        assert any(k.endswith(".lora_B") and w.abs().max() > 0 for k, w in w_one.items())  # B starts at zero: trained
        for name in w_one:
            torch.testing.assert_close(w_multi[name], w_one[name], rtol=1e-5, atol=1e-6)
        return

    # a full HF checkpoint in every mode (FSDP gathers a FULL_STATE_DICT for the final save, DeepSpeed its 16-bit
    # consolidated weights); FSDP also writes the tied lm_head, equal to the embeddings
    w_multi, w_one = load_file(multi_dir / "model.safetensors"), load_file(single_dir / "model.safetensors")
    assert w_one.keys() <= w_multi.keys()
    for name in w_one:
        torch.testing.assert_close(w_multi[name], w_one[name], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    run_worker(sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:])
