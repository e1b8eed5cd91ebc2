"""The plain-words summary at the end of a sweep (selfdistill/eval/plain_summary.py) on a stored sweep and on
hand-made rows, and the "fast and wrong" rule of the frontier plot (selfdistill/eval/reports.py)."""

import json

from selfdistill.eval.plain_summary import plain_summary
from selfdistill.eval.reports import collapsed, table_rows
from support import REPO


def _rows(name):
    data = json.loads((REPO / "results" / name / "summary.json").read_text())
    return {task: table_rows(task, s) for task, s in data["results"].items()}


def test_a_stored_sweep_reads_in_plain_words():
    text = plain_summary(_rows("tiny-student"), root="results/tiny-student", model="tiny-student")
    lines = text.splitlines()
    assert lines[0] == ("Sweep of tiny-student: tables in results/tiny-student/frontier.md, plots in "
                        "results/tiny-student/plots/.")
    assert "synthetic (n = 50): generate scores 50.0% at 1 token per forward, 1503 tokens/s." in lines
    assert "- verify_kmax16 (lossless): 2.45 tokens per forward, 0.40x generate's tokens/s." in lines
    # 0.9 is the fastest threshold that keeps 50.0%; 0.87 (46%) is more than a point below
    assert ("- ConfAdapt, best within 1 point of generate's accuracy: conf_adapt_0.9_kmax16, 1.61 tokens per "
            "forward, 0.41x generate's tokens/s, accuracy 50.0% (generate 50.0%).") in lines
    assert any(line.startswith("- Measured wall time: 15 of the 15 ConfAdapt and lossless settings are slower")
               for line in lines)
    assert "- Plot: results/tiny-student/plots/bbh_learnt.png" in lines
    assert "{" not in text  # no dict dump


def _row(setting, strategy, accuracy, tpf, tps, agreement=None, exact=None):
    return {"setting": setting, "strategy": strategy, "n": 10, "accuracy": accuracy, "tokens_per_forward_mean": tpf,
            "tokens_per_second": tps, "answer_agreement": agreement, "exact_agreement": exact}


def test_hand_made_rows():
    rows = [_row("generate", "generate", 0.40, 1.0, 100.0, 1.0, 1.0),
            _row("verify", "verify", 0.40, 2.0, 150.0, 1.0, 1.0),
            _row("ca_0.9", "conf_adapt", 0.395, 1.5, 120.0, 0.96, 0.9),
            _row("ca_0.7", "conf_adapt", 0.30, 2.5, 160.0, 0.80, 0.5)]
    lines = plain_summary({"t": rows}, root="r", model="m").splitlines()
    assert "- verify (lossless): 2.00 tokens per forward, 1.50x generate's tokens/s; the same text as greedy on " \
           "10 of 10 prompts." in lines
    best = "- ConfAdapt, best within 1 point of generate's accuracy: ca_0.9, 1.50"
    assert any(line.startswith(best) for line in lines)
    kept = "- ConfAdapt keeping at least 95% of greedy's answers: ca_0.9, 1.50 tokens per forward (96.0% kept)."
    assert kept in lines
    assert not any("Measured wall time" in line for line in lines)  # nothing is slower than generate
    rows[2]["accuracy"] = 0.35
    lines = plain_summary({"t": rows}, root="r", model="m").splitlines()
    assert any(line.startswith("- ConfAdapt: no threshold stays within 1 point") and "ca_0.9" in line
               for line in lines)


def test_fast_and_wrong_is_below_a_quarter_of_generates_accuracy():
    rows = [_row("generate", "generate", 0.40, 1.0, 1.0), _row("k2", "static", 0.11, 2.0, 1.0),
            _row("k5", "static", 0.09, 5.0, 1.0), _row("ca", "conf_adapt", 0.0, 1.0, 1.0)]
    assert collapsed(rows) == {"k5", "ca"}
    assert collapsed(rows[1:]) == set()  # no generate row: nothing to compare with
    assert collapsed([_row("generate", "generate", 0.0, 1.0, 1.0), rows[2]]) == set()
