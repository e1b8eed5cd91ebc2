"""lm-eval's own ``local-completions`` model against our server scores exactly what our ``selfdistill`` lm-eval
model scores with the same model, strategy and options (same completions, same accuracy)."""

import pytest
from serving import NAME

pytest.importorskip("lm_eval")
pytest.importorskip("aiohttp")  # lm-eval's API extras (lm-eval[api])

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from selfdistill.eval.harness import TASKS_DIR  # noqa: E402  (registers the "selfdistill" model)


def _run(model: str, model_args: dict) -> dict:
    return simple_evaluate(model=model, model_args=model_args, tasks=["sd_synthetic"], limit=6,
                           gen_kwargs={"max_gen_toks": 72}, log_samples=True,
                           task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))


@pytest.mark.parametrize("batching", [{"batch_size": 3}, {"num_concurrent": 3}],
                         ids=["prompt-lists", "concurrent-requests"])
def test_local_completions_against_the_server_scores_like_our_model(server, batching):
    # tokenizer_backend none: lm-eval sends the prompt strings and the server tokenizes them as our model does
    api = _run("local-completions", {"base_url": f"{server.url}/v1/completions", "model": NAME,
                                     "tokenizer_backend": "none", "max_retries": 1, **batching})
    ours = _run("selfdistill", {"pretrained": NAME, "strategy": "conf_adapt", "threshold": 0.9, "batch_size": 3,
                                "device": "cpu", "dtype": "float64"})

    def completions(results):
        return [s["resps"][0][0] for s in sorted(results["samples"]["sd_synthetic"], key=lambda s: s["doc_id"])]

    assert completions(api) == completions(ours)
    assert api["results"]["sd_synthetic"]["acc,none"] == ours["results"]["sd_synthetic"]["acc,none"]
    assert any(completions(ours))
