"""The one way every script and ``python -m selfdistill.lm_eval`` read their options.

Options are the fields of a dataclass, parsed by ``trl.TrlParser`` (``transformers.HfArgumentParser`` plus YAML
defaults from ``--config FILE``, read with ``yaml.safe_load``; command-line flags override the file). Every field
``a_b`` is also spelled ``--a-b``; ``--config=FILE`` works like ``--config FILE``. A bad value, a missing config
file, an unknown key in it, or a failed ``check`` is a usage error (exit status 2) naming the problem, raised
before any model or data loads.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

#: What a check may raise to reject a value: it becomes a usage error.
USAGE_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def split_config_flag(argv: Sequence[str]) -> list[str]:
    """``--config=FILE`` -> ``--config FILE`` (``TrlParser`` only looks for the separate form)."""
    out = []
    for arg in argv:
        out += arg.split("=", 1) if arg.startswith("--config=") else [arg]
    return out


def parse_config(cls, argv: Sequence[str] | None = None, *, default_config: str | os.PathLike | None = None,
                 check: Callable | None = None, prog: str | None = None, description: str | None = None):
    """An instance of the dataclass ``cls`` from ``argv`` (default ``sys.argv[1:]``), see the module docstring.

    ``default_config``: the YAML read when ``argv`` has no ``--config``. ``check(cfg)``: further validation;
    its :data:`USAGE_ERRORS` become usage errors.
    """
    from trl import TrlParser

    argv = split_config_flag(sys.argv[1:] if argv is None else argv)
    if default_config is not None and "--config" not in argv:
        argv = ["--config", str(default_config), *argv]
    parser = TrlParser((cls,), prog=prog, description=description)
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        config = Path(argv[argv.index("--config") + 1])
        if not config.is_file():
            parser.error(f"--config {config}: no such file")
    import yaml

    try:
        (cfg,) = parser.parse_args_and_config(argv)
        if check is not None:
            check(cfg)
    except USAGE_ERRORS as err:
        parser.error(str(err))
    except yaml.YAMLError as err:  # a malformed --config file: where it broke, not a traceback
        parser.error(f"--config {argv[argv.index('--config') + 1]}: not valid YAML: {err}")
    return cfg


def check_output_folder(path: str | os.PathLike, *, flag: str) -> Path:
    """``path`` if it is, or can be created as, a writable folder; else an ``OSError`` naming ``flag``."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} is an existing file; give a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: {parent} is not writable")
    return path


def plain_folder_name(name: str, *, flag: str = "--name") -> str:
    """``name`` if it is one plain folder name (letters, digits, ``. _ + -``, not only dots), so a results folder
    built from it stays inside its parent (``../../x`` is refused); else a ``ValueError`` naming ``flag``."""
    if not re.fullmatch(r"[\w.+-]+", name) or set(name) == {"."}:
        raise ValueError(f"{flag} {name!r} must be a plain folder name (letters, digits, . _ + -, not only dots)")
    return name
