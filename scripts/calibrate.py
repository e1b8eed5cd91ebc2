"""Calibrate a model's mask-slot confidences on dev prompts, report it, and (``--save_to_model``) ship the map.

    python scripts/calibrate.py --model smollm2-135m-mtp --suite gsm8k_dev --chat_template true --save_to_model true
    python scripts/calibrate.py --model tiny-student --suite synthetic_dev --limit 20 --save_to_model true

Writes ``results/calibration/<name>/`` (``calibration.md``, ``calibration.json``, ``reliability.png``) and, with
``--save_to_model``, ``mtp_calibration.json`` beside the model's weights: ConfAdapt then compares calibrated
confidences with its threshold by default (``calibrated=false`` turns it off). See selfdistill/eval/calibrate.py.
"""

from selfdistill.cli import parse_config
from selfdistill.eval.calibrate import CalibrateConfig, check_config, run_calibration

if __name__ == "__main__":
    cfg = parse_config(CalibrateConfig, check=check_config, prog="calibrate.py", description=__doc__.split("\n\n")[0])
    print(f"wrote {run_calibration(cfg)}")
