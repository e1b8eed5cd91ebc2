"""Stress the server on 127.0.0.1 (selfdistill.serve.stress): 48 mixed concurrent requests, 16 of whose clients
leave abruptly; checks that every other request is answered, every leaver is cancelled, nothing is left running,
and no cancelled row took part in more than one pass after its client left. Exit status 1 if a check fails.

    python scripts/stress_serve.py --out results/stress_serve/tiny_student.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfdistill.provenance import provenance
from selfdistill.run_folder import RunFolder
from selfdistill.serve.process import ServeProcess
from selfdistill.serve.stress import plan, run

PROMPTS = ["Question: Tom has 3 apples and gets 5 more. How many apples does he have?\nAnswer:",
           "Question: A box holds 4 rows of 6 pencils. How many pencils are in the box?\nAnswer:",
           "Question: Sam has 12 coins and gives away 5. How many coins are left?\nAnswer:"]

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-student")
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--leave", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not 0 <= args.leave <= args.requests or args.requests < 1:
        p.error("--requests must be >= 1 and --leave in [0, --requests]")
    record = provenance(["scripts/stress_serve.py", *sys.argv[1:]])
    requests = plan(args.requests, args.leave, model=args.model, prompts=PROMPTS, max_tokens=args.max_tokens,
                    seed=args.seed)
    with ServeProcess(["--model", args.model, "--max-engines", "4", "--log-level", "warning"]) as url:
        report = run(url, requests)
    print(json.dumps(report, indent=1))
    if args.out:
        RunFolder(args.out.parent).write_record(args.out.name, record, report=report)
    sys.exit(0 if report["ok"] else 1)
