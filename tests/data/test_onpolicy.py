"""On-policy training text: the pure pieces (selfdistill/data/onpolicy.py) on hand-made cases, and the recipe
(selfdistill/eval/onpolicy_data.py) end to end on the shipped tiny teacher (completions against plain ``generate``,
resume, refusals, the trainer reading the result)."""

import json

import pytest
import torch

from selfdistill.data.onpolicy import chunks, onpolicy_row, pick_rows
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


def test_onpolicy_row_replaces_the_solution_and_says_what_it_was():
    rec = {"id": "r1", "completion": "  2 + 1 = 3. The answer is 3\n", "new_tokens": 9, "correct": True}
    out = onpolicy_row(_row(1), rec, max_new_tokens=10)
    assert out["solution"] == "2 + 1 = 3. The answer is 3" and out["reference_solution"] == "ref 1"
    assert out["finished"] and out["base_correct"] and set(SCHEMA) <= set(out)
    assert not onpolicy_row(_row(1), rec, max_new_tokens=9)["finished"]  # cut at the token limit
    assert not onpolicy_row(_row(1), rec | {"completion": " \n"}, max_new_tokens=10)["finished"]  # nothing written
    with pytest.raises(ValueError, match="does not belong"):
        onpolicy_row(_row(2), rec, max_new_tokens=10)


@pytest.fixture(scope="module")
def recipe():
    from selfdistill.eval import onpolicy_data

    return onpolicy_data


def _cfg(recipe, out, **over):
    args = {"model": "tiny-teacher", "dataset": "synthetic", "limit": 6, "chunk_rows": 4, "batch_size": 3,
            "chat_template": False, "max_new_tokens": 48, "num_threads": 1, "out": str(out)} | over
    return recipe.OnPolicyConfig(**args)


def test_recipe_writes_the_base_models_greedy_text_and_resumes(recipe, tmp_path):
    from selfdistill.data.prompts import render_prompt
    from selfdistill.models.loader import load_model
    from selfdistill.data.sources import load_rows

    out = tmp_path / "op"
    path = recipe.run_onpolicy_data(_cfg(recipe, out))
    every = [json.loads(line) for p in sorted((out / "chunks").iterdir()) for line in p.read_text().splitlines()]
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(every) == 6 and kept == [r for r in every if r["finished"]] and kept
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rows"] == 6 and meta["finished"] == len(kept) and "commit" in meta["provenance"]

    # the naive reference: model.generate greedy on each prompt alone, cut at the first EOS
    model, tok = load_model("tiny-teacher", dtype="float32", device="cpu")
    for row in every[:3]:
        ids = tok(render_prompt(row), return_tensors="pt").input_ids
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=48, do_sample=False)[0, ids.shape[1]:].tolist()
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        gen = gen[:next((i for i, t in enumerate(gen) if t in eos), len(gen))]
        assert row["solution"] == tok.decode(gen, skip_special_tokens=True).strip()

    # resume: a lost chunk is redone, the others are kept as they were
    first = (out / "chunks" / "00000.jsonl").read_text()
    (out / "chunks" / "00001.jsonl").unlink()
    recipe.run_onpolicy_data(_cfg(recipe, out))
    assert (out / "chunks" / "00000.jsonl").read_text() == first
    assert [json.loads(line) for line in path.read_text().splitlines()] == kept

    # the trainer reads it as a dataset file
    assert len(load_rows(str(path), split="train")) + len(load_rows(str(path), split="validation")) == len(kept)


def test_recipe_refuses_a_folder_of_another_run(recipe, tmp_path):
    out = tmp_path / "op"
    recipe.claim_folder(out, recipe.fingerprint(_cfg(recipe, out)))
    with pytest.raises(FileExistsError, match="other options.*limit"):
        recipe.claim_folder(out, recipe.fingerprint(_cfg(recipe, out, limit=7)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        recipe.claim_folder(tmp_path / "other", recipe.fingerprint(_cfg(recipe, tmp_path / "other")))


@pytest.mark.parametrize("over, message", [
    (dict(batch_size=0), "batch_size"), (dict(limit=-1), "limit"), (dict(model="/no/such/model"), "no/such"),
    (dict(dtype="float7"), "float7"),
])
def test_recipe_rejects_bad_options_before_loading(recipe, tmp_path, over, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        recipe.check_config(_cfg(recipe, tmp_path / "op", **over))
