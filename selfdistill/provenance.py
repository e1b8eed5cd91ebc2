"""Where a number came from: the command, commit, hardware and library versions, written beside results."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from selfdistill.paths import REPO_ROOT


def differences(stored: dict, now: dict) -> dict[str, tuple]:
    """``{key: (stored value, current value)}`` for every key whose value differs (a missing key reads ``None``),
    in key order: what makes a resumed run, sweep or data folder refuse the current options."""
    return {k: (stored.get(k), now.get(k)) for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k)}


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The checkout's HEAD commit, suffixed ``+dirty`` when tracked files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpuinfo() -> str:
    """``/proc/cpuinfo`` ("" where there is none: not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def hardware() -> str:
    """A one-line description: CPU model and core count, plus the GPU name when CUDA is in use."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
               platform.processor() or platform.machine())
    desc = f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return desc


BF16_UNITS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_units(*, cpuinfo: str | None = None) -> str:
    """The CPU's bf16 matrix units among :data:`BF16_UNITS` (the flags of ``cpuinfo``, by default
    ``/proc/cpuinfo``), ``"none"`` without any, or ``"unknown"`` where no flags can be read. With them a bf16 pass
    over many tokens costs about what a one-token pass costs; without them bf16 is emulated and fp32 is faster."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return "unknown"
    return ", ".join(u for u in BF16_UNITS if u in flags) or "none"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "accelerate", "datasets", "lm_eval"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def provenance(argv: list[str] | None = None) -> dict:
    """Everything needed to reproduce a result: command line, commit, hardware, versions, UTC time."""
    argv = sys.argv if argv is None else argv
    return {"command": " ".join(["python", *argv]), "commit": git_commit(), "hardware": hardware(),
            "cpu_bf16_units": cpu_bf16_units(), "versions": versions(),
            "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}

