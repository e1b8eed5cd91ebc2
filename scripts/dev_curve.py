"""Dev tokens per forward against training tokens across an adapter's lineage (selfdistill/eval/dev_curve.py).

    python scripts/dev_curve.py --sweeps results/dev/smollm2-135m-mtp-750-dev results/dev/smollm2-k5-cont1-dev \\
        --raw_tokens 876000 1927200 --out results/dev/curve

``--raw_tokens`` are the run records' ``total.raw_tokens`` of each sweep's adapter. Writes ``curve.png`` and
``curve.json`` (the points, with the command and commit) into ``--out``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from selfdistill.cli import parse_config


@dataclass(kw_only=True)
class DevCurveConfig:
    sweeps: list[str] = field(default_factory=list, metadata={"help": "dev sweep folders (pareto.py outputs)"})
    raw_tokens: list[int] = field(default_factory=list, metadata={"help": "training tokens behind each sweep"})
    task: str = "gsm8k_dev"
    setting: str = "verify_kmax5_margin2"
    target: float | None = field(default=None, metadata={"help": "a target line (tokens per forward)"})
    out: str = "results/dev/curve"


def check_config(cfg: DevCurveConfig) -> None:
    if not cfg.sweeps or len(cfg.sweeps) != len(cfg.raw_tokens):
        raise ValueError(f"--sweeps and --raw_tokens need one value each, got {len(cfg.sweeps)} and "
                         f"{len(cfg.raw_tokens)}")
    missing = [s for s in cfg.sweeps if not Path(s).is_dir()]
    if missing:
        raise ValueError(f"no such sweep folder: {missing}")


def main(cfg: DevCurveConfig) -> Path:
    from selfdistill.eval.dev_curve import curve_point, plot_curve
    from selfdistill.provenance import provenance
    from selfdistill.run_folder import RunFolder

    points = [curve_point(s, task=cfg.task, setting=cfg.setting, raw_tokens=t)
              for s, t in zip(cfg.sweeps, cfg.raw_tokens)]
    out = RunFolder(cfg.out)
    out.write_record("curve.json", provenance(), points=points)
    return plot_curve(points, out.path("curve.png"), title=f"{cfg.setting} on {cfg.task}", target=cfg.target)


if __name__ == "__main__":
    print(main(parse_config(DevCurveConfig, check=check_config, prog="dev_curve.py",
                            description=__doc__.split("\n\n")[0])))
