"""The one way every entry point gets a model: ``load_model(name_or_path) -> (model, tokenizer)``.

``name_or_path`` is a model alias (:data:`MODEL_SOURCES`), a local checkpoint folder or a hub id. Aliases are
registered in one place, :data:`MODEL_SOURCES`: a new embedded model is one new entry mapping its name to a
function that returns its checkpoint folder (raising ``FileNotFoundError`` with the fix when it is absent).

Also here: the one table of dtype names (:data:`DTYPES`), the one device resolution (:func:`resolve_device`) and
the one default compute dtype of a device (:func:`default_dtype`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path

import torch

from selfdistill.models import gated_lora, smollm2, tiny
from selfdistill.models.calibration import ConfidenceMap, read_calibration, set_calibration

#: Dtype names accepted by every entry point (``auto``: the checkpoint's own dtype).
DTYPES: dict[str, torch.dtype | str] = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                                        "float16": torch.float16, "float64": torch.float64}

#: Alias -> function returning the checkpoint folder. Extension by addition: register new embedded models here.
MODEL_SOURCES: dict[str, Callable[[], Path]] = {
    tiny.TINY_TEACHER_ALIAS: tiny.teacher_path,
    tiny.TINY_STUDENT_ALIAS: tiny.student_path,
    smollm2.ALIAS: smollm2.checkpoint_path,
    smollm2.MTP_ALIAS: smollm2.adapter_path,
}

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | str:
    """``"bfloat16"`` -> ``torch.bfloat16``; ``None``/``"auto"`` -> ``"auto"``; a ``torch.dtype`` passes through."""
    if name is None or isinstance(name, torch.dtype):
        return name or "auto"
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {tuple(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str | None = "auto") -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``cpu``, ``cuda``, ``cuda:N``,
    ``mps`` pass through; anything else is refused."""
    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def default_dtype(device: str) -> str:
    """The compute dtype an entry point uses when none is given: ``bfloat16`` on CUDA (the GPUs users decode and
    train on, and the paper's width), ``float32`` anywhere else. On CPUs bf16 pays only where the CPU has bf16 units
    and a measurement says so (on the tiny model it did not: ``results/ablations/tiny_demo_recipe.md``), so there it
    is an explicit choice (``--dtype bfloat16``, ``bf16: true``)."""
    return "bfloat16" if resolve_device(device).startswith("cuda") else "float32"


def resolve_run_dtype(dtype: str | None, *, device: str | None = "auto") -> str:
    """``dtype`` checked against :data:`DTYPES`, or :func:`default_dtype` of ``device`` when it is ``None``: the
    one resolution of every entry point's ``--dtype`` (``auto`` stays the checkpoint's own dtype)."""
    if dtype is None:
        return default_dtype(device)
    resolve_dtype(dtype)
    return dtype


def resolve_model_path(name_or_path: str) -> str:
    """An alias -> its checkpoint (or adapter) folder; an existing local folder -> itself; a hub id -> itself.

    Raises ``FileNotFoundError`` for a path that does not exist (a name that has a path separator or starts with
    ``.``/``~``, or any name that is neither an alias nor a valid hub id), naming the aliases.
    """
    if name_or_path in MODEL_SOURCES:
        return str(MODEL_SOURCES[name_or_path]())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not is_adapter_folder(path):
            raise FileNotFoundError(f"{name_or_path} is a folder but holds neither config.json nor "
                                    f"{gated_lora.CONFIG_FILE}: not a model checkpoint or adapter")
        return str(path)
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path
    if looks_local or path.exists() or not _HUB_ID.fullmatch(name_or_path):
        raise FileNotFoundError(f"model {name_or_path!r}: no such folder, and not an alias "
                                f"({', '.join(MODEL_SOURCES)}) or a hub id of the form 'org/name'")
    return name_or_path


def is_adapter_folder(path: str | Path) -> bool:
    """A gated-LoRA adapter folder (:mod:`selfdistill.models.gated_lora`) rather than a full checkpoint."""
    return (Path(path) / gated_lora.CONFIG_FILE).is_file()


def trained_k_max_at(name_or_path: str) -> int | None:
    """The ``k_max`` a local checkpoint or adapter records (what ``trained_k_max_from`` reads once it is loaded),
    without loading it: ``mtp_trained_k_max`` in ``config.json`` or ``trained_k_max`` in an adapter's config.
    ``None`` when it records none or is not local (a hub id)."""
    import json

    path = Path(resolve_model_path(name_or_path))
    if is_adapter_folder(path):
        value = gated_lora.read_adapter_config(path).get("trained_k_max")
    elif (path / "config.json").is_file():
        from selfdistill.models.mask_token import TRAINED_K_KEY

        value = json.loads((path / "config.json").read_text()).get(TRAINED_K_KEY)
    else:
        return None
    return None if value is None else int(value)


def calibration_at(path: str) -> ConfidenceMap | None:
    """The confidence map a local checkpoint or adapter folder carries (validated), without loading it; ``None``
    for a folder without one or a hub id."""
    return read_calibration(path) if Path(path).is_dir() else None


def load_model(name_or_path: str, *, dtype: str | torch.dtype | None = None, device: str | None = None,
               attn_implementation: str | None = None, calibration: bool = True,
               add_mask_token: bool = False, seed: int = 0):
    """``(model, tokenizer)`` in eval mode on ``device``; the tokenizer always has a pad token (EOS if it had none).

    An adapter folder loads its base model (``base_model`` in its config, itself resolved here) and applies the
    gated-LoRA adapter to it, with the adapter folder's tokenizer (which carries the mask tokens).

    Args:
        name_or_path: alias, local checkpoint folder or hub id (see :func:`resolve_model_path`).
        dtype: a :data:`DTYPES` name or ``torch.dtype``; ``None``: the checkpoint's own.
        device: see :func:`resolve_device`; ``None``: leave where ``from_pretrained`` puts it (CPU).
        attn_implementation: ``sdpa``, ``eager``, ...; ``None``: transformers' default.
        calibration: attach the folder's confidence map (``mtp_calibration.json``, validated first); ``False``
            leaves it unread (``scripts/calibrate.py`` refits a stale one).
        add_mask_token: give a model without ``<mtp>`` an untrained one (a step-0 baseline; a no-op for a model
            that has it), its embedding row drawn from a generator seeded by ``seed``, so a re-run or a resumed
            sweep decodes with the same row.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype)
    path = resolve_model_path(name_or_path)
    cmap = calibration_at(path) if calibration else None  # validated before any weights load
    with _hub_errors(name_or_path, path):
        tokenizer = AutoTokenizer.from_pretrained(path)
    if is_adapter_folder(path):
        base = adapter_base(path)
        model, _ = load_model(base, dtype=dtype, attn_implementation=attn_implementation)
        gated_lora.attach_saved_adapter(model, path)
    else:
        extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
        with _hub_errors(name_or_path, path):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)
    model, tokenizer = finish_loading(model, tokenizer, calibration=cmap, add_mask_token=add_mask_token, seed=seed)
    if device is not None:
        model = model.to(resolve_device(device))
    return model, tokenizer


def finish_loading(model, tokenizer, *, calibration: ConfidenceMap | None, add_mask_token: bool = False,
                   seed: int = 0):
    """What every model loaded for decoding gets once its weights are in, whoever loaded them (:func:`load_model`,
    or lm-eval's ``HFLM`` for a plain checkpoint): a pad token (EOS if it had none), its folder's confidence map
    (:func:`calibration_at`, read before the weights), an untrained ``<mtp>`` row when ``add_mask_token`` (drawn
    from a generator seeded by ``seed``; a no-op for a model that has one), and eval mode."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_calibration(model, calibration)
    if add_mask_token:
        from selfdistill.models.mask_token import add_mask_token as add_mask

        torch.manual_seed(seed)  # the new row is drawn at random (mean/covariance resizing)
        add_mask(model, tokenizer)
    return model.eval(), tokenizer


def adapter_base(adapter_dir: str | Path) -> str:
    """The ``base_model`` an adapter folder names: an alias, a hub id, or a folder, which may be relative to the
    adapter folder itself (so an adapter and its base can move together)."""
    base = gated_lora.read_adapter_config(adapter_dir)["base_model"]
    beside = Path(adapter_dir) / base
    if base not in MODEL_SOURCES and not Path(base).expanduser().is_dir() and beside.is_dir():
        return str(beside)
    return base


@contextlib.contextmanager
def _hub_errors(name: str, path: str):
    """A hub id that cannot be fetched (no network, or no such repository) is reported as what the user most likely
    meant: no such alias or local folder, with the aliases named."""
    try:
        yield
    except OSError as err:
        if Path(path).expanduser().is_dir():
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(f"model {name!r}: no such alias ({', '.join(MODEL_SOURCES)}) or local folder, and "
                                f"the hub could not provide it ({first})") from None
