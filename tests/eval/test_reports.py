"""The sweep reports: frontier memberships (hand-made rows), the markdown marks and the plot's panels."""

import math

import pytest

from selfdistill.eval.reports import CSV_COLUMNS, frontier_markdown, plot_task, table_rows


def summary(name, strategy, *, acc, tpf, tps, agree, **setting):
    return {"n": 10, "accuracy": acc, "accuracy_stderr": 0.01, "tokens_per_forward_mean": tpf,
            "tokens_per_forward_std": 0.0, "tokens_per_second": tps, "answer_agreement": agree,
            "exact_agreement": agree, "setting": {"name": name, "strategy": strategy, "k": None, "threshold": None,
                                                  "k_max": None, "mask_margin": None} | setting}


#: generate is the slow reference; verify is as faithful and wider; static k is fastest and least faithful;
#: ConfAdapt is the most accurate but changes half the answers (accuracy and agreement disagree on purpose).
SUMMARIES = [summary("generate", "generate", acc=0.20, tpf=1.0, tps=60.0, agree=1.0),
             summary("verify", "verify", acc=0.20, tpf=1.5, tps=30.0, agree=1.0, k_max=5),
             summary("static_k3", "static", acc=0.05, tpf=3.0, tps=70.0, agree=0.1, k=3),
             summary("conf_adapt_0.9", "conf_adapt", acc=0.30, tpf=1.2, tps=25.0, agree=0.5, threshold=0.9, k_max=5)]


def memberships(rows, name):
    return [r["setting"] for r in rows if r[f"frontier_{name}"]]


def test_each_frontier_uses_its_own_axes():
    rows = table_rows("t", SUMMARIES)
    assert set(CSV_COLUMNS) >= {"frontier_tokens_per_forward", "frontier_tokens_per_second", "frontier_agreement"}
    # accuracy vs tokens per forward: ConfAdapt (most accurate), verify (beats it on width), static k (widest)
    assert memberships(rows, "tokens_per_forward") == ["verify", "static_k3", "conf_adapt_0.9"]
    # accuracy vs tokens/s: generate is faster than verify and ConfAdapt here
    assert memberships(rows, "tokens_per_second") == ["generate", "static_k3", "conf_adapt_0.9"]
    # answer agreement vs tokens per forward: verify beats generate and ConfAdapt (as faithful or more, wider)
    assert memberships(rows, "agreement") == ["verify", "static_k3"]
    md = frontier_markdown({"t": rows}, model="m", batch_size=1)
    assert "| verify |" in md and md.split("| verify |")[1].split("\n")[0].rstrip().endswith("| FA |")
    assert md.split("| generate |")[1].split("\n")[0].rstrip().endswith("| T |")


def test_rows_without_a_generate_baseline_are_on_no_agreement_frontier():
    rows = table_rows("t", [s | {"answer_agreement": None, "exact_agreement": None} for s in SUMMARIES[1:]])
    assert memberships(rows, "agreement") == []
    assert memberships(rows, "tokens_per_forward") == ["verify", "static_k3", "conf_adapt_0.9"]


@pytest.mark.parametrize("agreement", [True, False])
def test_plot_has_an_agreement_panel_only_when_there_is_agreement(tmp_path, monkeypatch, agreement):
    import matplotlib.pyplot as plt

    shapes = []
    real = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **kw: shapes.append(a) or real(*a, **kw))
    summaries = SUMMARIES if agreement else [s | {"answer_agreement": math.nan} for s in SUMMARIES]
    plot_task(tmp_path / "t.png", "t", table_rows("t", summaries), model="m", batch_size=1)
    assert (tmp_path / "t.png").stat().st_size > 0
    assert shapes == [(1, 3 if agreement else 2)]


def test_every_built_in_strategy_has_a_look_and_a_new_one_gets_a_default():
    from selfdistill.decode.registry import strategy_names
    from selfdistill.eval.presentation import LOOKS, look

    assert set(strategy_names()) <= set(LOOKS)
    assert look("conf_adapt").point({"threshold": 0.9, "k_max": 5}) == "0.9" and look("static").point({"k": 3}) == "k=3"
    assert look("my_new_strategy").label == "my_new_strategy" and look("verify").point({}) is None
