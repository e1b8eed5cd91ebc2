"""On-policy training text: the pure pieces (selfdistill/data/onpolicy.py) on hand-made cases, and the recipe
(selfdistill/eval/onpolicy_data.py) end to end on the shipped tiny teacher (completions against plain ``generate``,
``verify`` on a gated adapter against ``generate``, resume, refusals, the trainer reading the result)."""

import json

import pytest
import torch

from selfdistill.data.onpolicy import chunks, join_onpolicy, onpolicy_record, onpolicy_row, pick_rows
from selfdistill.data.prompts import SCHEMA


def _row(i, **over):
    return {"id": f"r{i}", "task": "gsm8k", "subtask": "", "question": f"q{i}", "solution": f"ref {i}", "answer": "3",
            "group": f"g{i}"} | over


def test_pick_rows_is_seeded_without_replacement():
    rows = [_row(i) for i in range(10)]
    a, b = pick_rows(rows, limit=4, seed=1), pick_rows(rows, limit=4, seed=1)
    assert a == b and len({r["id"] for r in a}) == 4
    assert pick_rows(rows, limit=4, seed=2) != a
    assert sorted(r["id"] for r in pick_rows(rows, limit=None, seed=0)) == sorted(r["id"] for r in rows)
    assert len(pick_rows(rows, limit=50, seed=0)) == 10


def test_chunks():
    assert chunks([1, 2, 3, 4, 5], size=2) == [[1, 2], [3, 4], [5]]
    assert chunks([], size=3) == []
    with pytest.raises(ValueError, match="chunk size"):
        chunks([1], size=0)


def test_a_record_keeps_the_id_and_the_models_text_and_says_what_it_was():
    rec = {"id": "r1", "completion": "  2 + 1 = 3. The answer is 3\n", "new_tokens": 9, "correct": True,
           "prompt": "q1", "reference": "3"}
    out = onpolicy_record(rec, max_new_tokens=10)
    assert out == {"id": "r1", "completion": "2 + 1 = 3. The answer is 3", "new_tokens": 9, "finished": True,
                   "base_correct": True}
    assert not onpolicy_record(rec, max_new_tokens=9)["finished"]  # cut at the token limit
    assert not onpolicy_record(rec | {"completion": " \n"}, max_new_tokens=10)["finished"]  # nothing written


def _rec(i, finished=True):
    return {"id": f"r{i}", "completion": f"mine {i}", "new_tokens": 3, "finished": finished, "base_correct": False}


def test_join_keeps_finished_records_with_their_rows_text_replaced():
    rows = [_row(i) for i in range(4)]
    out = join_onpolicy(rows, [_rec(2), _rec(0, finished=False), _rec(1)])
    assert [r["id"] for r in out] == ["r2", "r1"]
    assert out[0] == {k: _row(2)[k] for k in SCHEMA} | {"solution": "mine 2", "base_correct": False,
                                                         "reference_solution": "ref 2"}
    with pytest.raises(ValueError, match="no row in its dataset"):
        join_onpolicy(rows, [_rec(9)])
    with pytest.raises(ValueError, match="twice"):
        join_onpolicy(rows, [_rec(1), _rec(1)])
    with pytest.raises(ValueError, match="does not belong"):
        onpolicy_row(_row(2), _rec(1))


@pytest.fixture(scope="module")
def recipe():
    from selfdistill.eval import onpolicy_data

    return onpolicy_data


def _cfg(recipe, out, **over):
    args = {"model": "tiny-teacher", "dataset": "synthetic", "limit": 6, "chunk_rows": 4, "batch_size": 3,
            "chat_template": False, "max_new_tokens": 48, "num_threads": 1, "out": str(out)} | over
    return recipe.OnPolicyConfig(**args)


def _naive_greedy(model, tok, row, max_new_tokens):
    """``model.generate`` greedy on one prompt alone, cut at the first EOS."""
    from selfdistill.data.prompts import render_prompt

    ids = tok(render_prompt(row), return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)[0, ids.shape[1]:].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    gen = gen[:next((i for i, t in enumerate(gen) if t in eos), len(gen))]
    return tok.decode(gen, skip_special_tokens=True).strip()


def _records(out):
    return [json.loads(line) for p in sorted((out / "chunks").iterdir()) for line in p.read_text().splitlines()]


def test_recipe_writes_the_base_models_greedy_text_and_resumes(recipe, tmp_path):
    from selfdistill.data.sources import load_rows
    from selfdistill.models.loader import load_model

    out = tmp_path / "op"
    spec = recipe.run_onpolicy_data(_cfg(recipe, out))
    every = _records(out)
    assert spec == f"onpolicy:{out}" and len(every) == 6 and any(r["finished"] for r in every)
    assert all(set(r) == {"id", "completion", "new_tokens", "finished", "base_correct"} for r in every)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rows"] == 6 and meta["finished"] == sum(r["finished"] for r in every)
    assert "commit" in meta["provenance"]

    # the trainer reads the folder joined with its dataset: finished rows, the model's text as the solution
    rows = list(load_rows(spec, split="train")) + list(load_rows(spec, split="validation"))
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in every if r["finished"])
    model, tok = load_model("tiny-teacher", dtype="float32", device="cpu")
    for row in rows[:3]:
        assert row["solution"] == _naive_greedy(model, tok, row, 48) and row["reference_solution"]

    # resume: a lost chunk is redone, the others are kept as they were
    first = (out / "chunks" / "00000.jsonl").read_text()
    (out / "chunks" / "00001.jsonl").unlink()
    recipe.run_onpolicy_data(_cfg(recipe, out))
    assert (out / "chunks" / "00000.jsonl").read_text() == first and _records(out) == every


def test_verify_on_a_gated_adapter_writes_the_base_models_greedy_text(recipe, tmp_path):
    from support import save_random_teacher_adapter

    save_random_teacher_adapter(tmp_path / "adapter", dtype="float32")
    recipe.run_onpolicy_data(_cfg(recipe, tmp_path / "gen"))
    recipe.run_onpolicy_data(_cfg(recipe, tmp_path / "ver", model=str(tmp_path / "adapter"), strategy="verify"))
    assert _records(tmp_path / "ver") == _records(tmp_path / "gen")


@pytest.mark.parametrize("over, message", [
    (dict(strategy="conf_adapt"), "not lossless"), (dict(strategy="verify"), "needs a gated-LoRA adapter"),
    (dict(strategy="generate_cb"), "not plain greedy"), (dict(strategy="nope"), "unknown strategy"),
])
def test_recipe_refuses_text_that_is_not_the_base_models_greedy(recipe, tmp_path, over, message):
    with pytest.raises(ValueError, match=message):
        recipe.check_config(_cfg(recipe, tmp_path / "op", **over))


def test_an_onpolicy_spec_names_what_is_wrong(tmp_path):
    from selfdistill.data.sources import load_rows

    with pytest.raises(FileNotFoundError, match="not an on-policy data folder"):
        load_rows(f"onpolicy:{tmp_path}")
    with pytest.raises(ValueError, match="needs a folder"):
        load_rows("onpolicy:")
    (tmp_path / "fingerprint.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ValueError, match="format 1"):
        load_rows(f"onpolicy:{tmp_path}")


def test_recipe_refuses_a_folder_of_another_run(recipe, tmp_path):
    out = tmp_path / "op"
    recipe.claim_folder(_cfg(recipe, out))
    recipe.claim_folder(_cfg(recipe, out, num_threads=2))  # speed only: the same run
    with pytest.raises(FileExistsError, match="other options.*limit"):
        recipe.claim_folder(_cfg(recipe, out, limit=7))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        recipe.claim_folder(_cfg(recipe, tmp_path / "other"))


@pytest.mark.parametrize("over, message", [
    (dict(batch_size=0), "batch_size"), (dict(limit=-1), "limit"), (dict(model="/no/such/model"), "no/such"),
    (dict(dtype="float7"), "float7"),
])
def test_recipe_rejects_bad_options_before_loading(recipe, tmp_path, over, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        recipe.check_config(_cfg(recipe, tmp_path / "op", **over))
