"""``python -m selfdistill.serve`` / ``selfdistill-serve``: load a model and serve it over HTTP (uvicorn).

    python -m selfdistill.serve --model tiny-student                                  # 127.0.0.1:8000
    python -m selfdistill.serve --model runs/x --strategy verify --k-max 8 --max-batch 16 --port 8001
    python -m selfdistill.serve --model smollm2-135m-instruct --strategy static --k 1 --dtype bfloat16

Options are read like every script's (:func:`selfdistill.cli.parse_config`); a bad one (unknown strategy, an
option the strategy does not take, a missing checkpoint or chat template file) is a usage error before anything
loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from selfdistill.decode.registry import with_options
from selfdistill.models.mask_token import require_mask_token


@with_options(note="the server's setting; a request may change it")
@dataclass(kw_only=True)
class ServeConfig:
    model: str = field(default="tiny-student", metadata={"help": "alias, checkpoint or adapter folder, or hub id"})
    served_model_name: str | None = field(default=None, metadata={
        "help": "the name clients pass as `model` (default: --model as given)"})
    strategy: str = field(default="conf_adapt", metadata={"help": "decoding strategy of the registry"})
    max_batch: int = field(default=16, metadata={"help": "rows in flight per decoding setting"})
    max_engines: int = field(default=4, metadata={
        "help": "distinct decoding settings (per-request `selfdistill` options) held at once"})
    dtype: str | None = field(default=None, metadata={
        "help": "float32 | bfloat16 | float16 | float64 | auto (the checkpoint's); default: bfloat16 on CUDA, "
                "float32 on CPU"})
    device: str | None = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    chat_template: str | None = field(default=None, metadata={
        "help": "a Jinja chat template file for /v1/chat/completions (default: the tokenizer's)"})
    default_max_tokens: int = field(default=256, metadata={"help": "chat budget when a request gives none"})
    max_body_bytes: int = field(default=1 << 20, metadata={
        "help": "largest request body accepted; a larger one gets a 413 before it is parsed"})
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"

    def strategy_options(self) -> dict:
        """The decoding options given (``None``: the strategy's default), for ``make_strategy``."""
        from selfdistill.decode.registry import declared_options

        return {name: getattr(self, name) for name in declared_options()}


def check_config(cfg: ServeConfig) -> None:
    """Usage errors before any model loads."""
    from selfdistill.decode.registry import make_strategy, refuse_baseline
    from selfdistill.models.loader import resolve_model_path, resolve_run_dtype

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"the server needs {' and '.join(missing)}: pip install -e '.[serve]'")
    check_device(cfg.device)
    cfg.dtype = resolve_run_dtype(cfg.dtype, device=cfg.device)  # float8 and the like are refused, naming the choices

    unit = make_strategy(cfg.strategy, **cfg.strategy_options())
    refuse_baseline(unit, by="the server", instead="serve plain greedy decoding with --strategy static --k 1")
    for name in ("max_batch", "max_engines", "default_max_tokens", "max_body_bytes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {cfg.port}")
    if cfg.chat_template is not None and not Path(cfg.chat_template).is_file():
        raise FileNotFoundError(f"--chat-template {cfg.chat_template}: no such file")
    path = resolve_model_path(cfg.model)
    if unit.num_masks > 0:
        require_mask_token(path, needed_by=f"--strategy {cfg.strategy}",
                           remedy="serve it as plain greedy decoding (--strategy static --k 1), or train it into a "
                                  "multi-token model first (scripts/online_distill.py)")


def check_device(device: str | None, *, cuda_available: bool | None = None) -> None:
    """``--device`` names a device this torch has (a CUDA device needs a CUDA build and a visible GPU)."""
    import torch

    from selfdistill.models.loader import resolve_device

    name = resolve_device(device)
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if name.startswith("cuda") and not has_cuda:
        raise ValueError(f"--device {device}: this torch sees no CUDA device (a CPU build, or no GPU visible); "
                         "use --device cpu or auto")


def build_app(cfg: ServeConfig):
    """Load the model and make the app (the heavy part of :func:`main`)."""
    from selfdistill.decode.engine import strategy_for
    from selfdistill.models.loader import load_model
    from selfdistill.serve.app import create_app

    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    unit = strategy_for(model, cfg.strategy, **cfg.strategy_options())  # built once: trained k_max, calibration
    template = Path(cfg.chat_template).read_text() if cfg.chat_template else None
    return create_app(model, tokenizer, model_name=cfg.served_model_name or cfg.model, strategy=unit,
                      max_batch=cfg.max_batch, max_engines=cfg.max_engines, chat_template=template,
                      default_max_tokens=cfg.default_max_tokens, max_body_bytes=cfg.max_body_bytes)


def main(argv: list[str] | None = None) -> None:
    from selfdistill.cli import parse_config

    cfg = parse_config(ServeConfig, argv, check=check_config, prog="python -m selfdistill.serve",
                       description="OpenAI-compatible server over the multi-token decoding engine")
    import uvicorn  # present: check_config said so before anything loaded

    uvicorn.run(build_app(cfg), host=cfg.host, port=cfg.port, log_level=cfg.log_level)


if __name__ == "__main__":
    main()
