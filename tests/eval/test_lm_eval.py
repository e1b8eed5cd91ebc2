"""lm-evaluation-harness path: our model through simple_evaluate on an offline task gives metrics and tokens per
forward, and scores exactly what selfdistill.eval.evaluation (the Pareto sweep's core) scores."""

import pytest
import torch
import yaml

from support import attach_random_adapter, save_tiny_checkpoint

pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from selfdistill.eval.harness import TASKS_DIR, add_decode_metrics  # noqa: E402

SUITE_OF_TASK = {"sd_gsm8k": ("gsm8k", "zero_shot"), "sd_gsm8k_cot": ("gsm8k", "few_shot"),
                 "sd_bbh": ("bbh", "zero_shot"), "sd_bbh_cot": ("bbh", "few_shot"),
                 "sd_bbh_learnt": ("bbh", "zero_shot"), "sd_synthetic": ("synth_gsm synth_bbh", "zero_shot"),
                 "sd_metamathqa": ("metamathqa", "zero_shot")}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: more threads only wait for each other
    yield
    torch.set_num_threads(before)


def test_simple_evaluate_reports_accuracy_and_tokens_per_forward_like_the_sweep(ckpt):
    from selfdistill.eval.evaluation import DecodeSetting, evaluate
    from selfdistill.eval.task_suites import suite_rows
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = {"pretrained": str(ckpt), "strategy": "conf_adapt", "threshold": 0.5, "k_max": 4, "batch_size": 2,
            "device": "cpu", "dtype": "float64"}
    results = simple_evaluate(model="selfdistill", model_args=args, tasks=["sd_synthetic"], limit=4,
                              gen_kwargs={"max_gen_toks": 6}, log_samples=True,
                              task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
    metrics = add_decode_metrics(results)["results"]["sd_synthetic"]
    assert 0.0 <= metrics["acc,none"] <= 1.0 and "acc_stderr,none" in metrics
    stats = results["config"]["selfdistill_decoding"]["per_task"]["sd_synthetic"]
    assert stats["n"] == 4 and stats["new_tokens"] == 4 * 6  # a random model never stops early
    assert 1.0 <= metrics["tokens_per_forward,none"] == stats["tokens_per_forward_mean"] <= 4.0
    assert metrics["tokens_per_second,none"] > 0
    assert "exact_agreement,none" not in metrics  # only with agreement=true
    assert stats["draft_checked"] >= 0 and "draft_precision,none" in metrics  # nan when nothing was checked

    # The same rows and setting through the sweep's scoring core give the same completions and verdicts.
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float64).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    rows = suite_rows("synthetic")[:4]  # lm-eval's --limit takes the first documents
    records, summary = evaluate(model, tok, rows, DecodeSetting(strategy="conf_adapt", threshold=0.5, k_max=4),
                                batch_size=2, max_new_tokens=6)
    logged = sorted(results["samples"]["sd_synthetic"], key=lambda s: s["doc_id"])
    assert [s["filtered_resps"][0] for s in logged] == [r["completion"] for r in records]
    assert metrics["acc,none"] == summary["accuracy"]
    assert stats["tokens_per_forward_mean"] == pytest.approx(summary["tokens_per_forward_mean"])


def test_model_without_mask_token_is_refused_unless_asked(tmp_path):
    from selfdistill.eval.harness import SelfDistillLM

    plain = save_tiny_checkpoint(tmp_path / "plain", with_mask_token=False)
    with pytest.raises(ValueError, match="no <mtp> mask token"):
        SelfDistillLM(pretrained=str(plain), strategy="conf_adapt", device="cpu", dtype="float32")
    lm = SelfDistillLM(pretrained=str(plain), strategy="conf_adapt", add_mask_token=True, device="cpu",
                       dtype="float32")
    assert lm.model.config.mtp_mask_token_id is not None
    SelfDistillLM(pretrained=str(plain), strategy="static", k=1, device="cpu", dtype="float32")  # no mask needed
    # model_args arrive as strings: mask_margin is parsed, and checked like any DecodeSetting
    lm = SelfDistillLM(pretrained=str(plain), strategy="verify", add_mask_token=True, mask_margin="2", device="cpu",
                       dtype="float32")
    assert lm.setting.mask_margin == 2 and lm.setting.name == "verify_kmax16_margin2"
    with pytest.raises(ValueError, match="mask_margin"):
        SelfDistillLM(pretrained=str(plain), strategy="static", k=2, mask_margin=2, device="cpu", dtype="float32")


def test_an_unset_k_max_is_the_models_trained_one(tmp_path):
    import json

    from selfdistill.eval.harness import SelfDistillLM
    from selfdistill.models.mask_token import TRAINED_K_KEY

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(config | {TRAINED_K_KEY: 4}))
    lm = SelfDistillLM(pretrained=str(ckpt), strategy="verify", device="cpu", dtype="float32")
    assert lm.setting.k_max == 4 and lm.setting.name == "verify_kmax4"
    lm = SelfDistillLM(pretrained=str(ckpt), strategy="verify", k_max="6", device="cpu", dtype="float32")
    assert lm.setting.k_max == 6


def test_a_checkpoint_folder_decodes_as_the_sweep_decodes_it_with_its_confidence_map():
    """HFLM loads a plain checkpoint itself; the loader's last step (finish_loading) still attaches the folder's
    confidence map, so ConfAdapt runs calibrated here as in the sweep (it ran on raw softmax before)."""
    from selfdistill.eval.evaluation import DecodeSetting
    from selfdistill.eval.harness import SelfDistillLM
    from selfdistill.models.calibration import calibration_from
    from selfdistill.models.loader import load_model

    lm = SelfDistillLM(pretrained="tiny-student", strategy="conf_adapt", device="cpu", dtype="float32")
    swept, _ = load_model("tiny-student", dtype="float32")
    assert lm.setting == DecodeSetting.for_model(swept, "conf_adapt") and lm.setting.calibrated is True
    assert calibration_from(lm.model) == calibration_from(swept) is not None


def test_any_option_the_registry_declares_is_a_model_arg(tmp_path):
    from selfdistill.eval.harness import SelfDistillLM

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    lm = SelfDistillLM(pretrained=str(ckpt), strategy="hedged", k_max="4", lead_groups="2", device="cpu",
                       dtype="float32")
    assert lm.setting.name == "hedged2_kmax4"
    assert lm.decode_summary() | {"per_task": None} == {
        "setting": "hedged2_kmax4", "strategy": "hedged", "k": None, "threshold": 0.0, "k_max": 4,
        "mask_margin": None, "lead_groups": 2, "calibrated": None, "per_task": None}


def _load_task_yaml(path):
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load(path.read_text(), Loader=Loader)


def test_task_yamls_use_our_stop_strings_and_functions():
    from selfdistill.data.prompts import stop_strings

    names = sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))
    assert names == sorted(SUITE_OF_TASK)
    for name in names:
        cfg = _load_task_yaml(TASKS_DIR / f"{name}.yaml")
        families, style = SUITE_OF_TASK[name]
        want = sorted({s for fam in families.split() for s in stop_strings(fam, style=style)})
        assert sorted(cfg["generation_kwargs"]["until"]) == want, name
        assert cfg["custom_dataset"].startswith("selfdistill.eval.harness.") and cfg["task"] == name
        if style == "few_shot":
            assert cfg["doc_to_text"] == "selfdistill.eval.harness.doc_to_text_few_shot"


@pytest.mark.parametrize("argv, message", [
    (["--metadata", "{bad"], "not valid JSON"),
    (["--output_path", "FILE"], "--output_path FILE is an existing file"),
    (["--model_args", "pretrained=/no/such/ckpt"], "no such folder"),
])
def test_launcher_rejects_bad_options_before_loading_anything(tmp_path, monkeypatch, capsys, argv, message):
    from selfdistill.eval.lm_eval_cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["--tasks", "sd_synthetic", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_an_adapter_folder_loads_through_the_one_loader_and_verify_matches_the_base(tmp_path):
    """A gated-LoRA adapter in model_args: loaded by selfdistill.models.loader, its lossless output is the base's."""
    from selfdistill.eval.harness import SelfDistillLM
    from selfdistill.models import gated_lora as gl
    from selfdistill.models.loader import load_model

    plain = save_tiny_checkpoint(tmp_path / "plain", with_mask_token=False)
    model, tok = load_model(str(plain), dtype="float64")
    attach_random_adapter(model, tok)
    gl.save_gated_lora(model, tok, tmp_path / "adapter", base_model=str(plain))

    class Req:
        task_name = "t"

        def __init__(self, text):
            self.args = (text, {"until": [], "max_gen_toks": 6})

    reqs = [Req("Q: 2 + 3 = ?\nA:"), Req("Q: 7 - 4 = ?\nA:")]
    common = dict(device="cpu", dtype="float64", batch_size=2)
    gated = SelfDistillLM(pretrained=str(tmp_path / "adapter"), strategy="verify", k_max=3, **common)
    assert gl.gated_state(gated.model) is not None
    base = SelfDistillLM(pretrained=str(plain), strategy="generate", **common)
    assert gated.generate_until(reqs, disable_tqdm=True) == base.generate_until(reqs, disable_tqdm=True)

    # loglikelihood requests are plain forwards of real tokens: the gate is off, so the adapter folder scores what
    # lm-eval's own HFLM scores on the base checkpoint
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    pairs = [("Q: 2 + 3 = ?\nA:", " 5"), ("Q: 7 - 4 = ?\nA:", " 3 apples"), ("Tom has", " 3 apples.")]
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(pairs)]
    ours = gated.loglikelihood(requests, disable_tqdm=True)
    theirs = HFLM(pretrained=str(plain), **common).loglikelihood(requests, disable_tqdm=True)
    assert [g for _, g in ours] == [g for _, g in theirs]
    assert [lp for lp, _ in ours] == pytest.approx([lp for lp, _ in theirs], abs=1e-9)
    assert len({round(lp, 6) for lp, _ in ours}) == 3  # three different scores: the check compares something


@pytest.mark.parametrize("bad", ["nan", "-1", "x"])
def test_lm_eval_model_args_go_through_the_same_validation(bad, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from selfdistill.eval.harness import SelfDistillLM

    monkeypatch.setattr(HFLM, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(ValueError, match="threshold|not a valid"):
        SelfDistillLM(pretrained="tiny-student", strategy="conf_adapt", threshold=bad)


def test_agreement_with_plain_greedy_is_reported_per_task(ckpt):
    args = {"pretrained": str(ckpt), "strategy": "verify", "k_max": 3, "batch_size": 2, "device": "cpu",
            "dtype": "float64", "agreement": "true"}
    results = simple_evaluate(model="selfdistill", model_args=args, tasks=["sd_synthetic"], limit=3,
                              gen_kwargs={"max_gen_toks": 5},
                              task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
    metrics = add_decode_metrics(results)["results"]["sd_synthetic"]
    assert metrics["exact_agreement,none"] == metrics["answer_agreement,none"] == 1.0  # verify is lossless
    args = {k: v for k, v in args.items() if k != "k_max"} | {"strategy": "static", "k": 3}
    static = simple_evaluate(model="selfdistill", model_args=args, tasks=["sd_synthetic"], limit=3,
                             gen_kwargs={"max_gen_toks": 5},
                             task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
    stats = static["config"]["selfdistill_decoding"]["per_task"]["sd_synthetic"]
    assert 0.0 <= stats["exact_agreement"] <= stats["answer_agreement"] <= 1.0


def test_each_rank_gets_its_own_gpu_by_default():
    from selfdistill.eval.harness import default_device

    assert default_device(cuda=False, env={"LOCAL_RANK": "3"}) == "cpu"
    assert default_device(cuda=True, env={"LOCAL_RANK": "3"}) == "cuda:3"
    assert default_device(cuda=True, env={}) == "cuda:0"
