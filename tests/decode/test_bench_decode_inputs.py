"""scripts/bench_decode.py refuses bad options and prompt files with a usage error naming them, before loading."""

import pytest

from selfdistill.eval import bench_decode
from selfdistill.eval.measured import bench_settings


@pytest.fixture(scope="module")
def bench():
    return bench_decode


def _usage_error(bench, capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--batch-sizes", "0"], "--batch-sizes takes comma-separated positive integers"),
    (["--batch-sizes", "1,x"], "--batch-sizes"),
    (["--limit", "0"], "--limit"),
    (["--dtype", "int8"], "--dtype"),
    (["--device", "gpu"], "unknown device"),
    (["--model", "/no/such/ckpt"], "no such folder"),
    (["--out", "FILE"], "is an existing file"),
    (["--k_max", "0"], "option k_max must be"),
    (["--k_max", "5", "--only", "verify_kmax16"], "unknown setting(s) ['verify_kmax16']"),
    (["--random-llama", "64,2", "--chat_template", "true"], "--chat_template needs the model's tokenizer"),
])
def test_bad_options_are_usage_errors(bench, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("")
    assert message in _usage_error(bench, capsys, argv)


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "a"}\n{"id": 2}\n', "row 2 has no non-empty text in any of the fields"),
    (b"", "holds no records"),
    (b'{"prompt": "caf\xff"}\n', "line 1 is not UTF-8"),
])
def test_bad_prompt_files_name_the_file_and_row(bench, tmp_path, capsys, content, message):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(content)
    err = _usage_error(bench, capsys, ["--prompts", str(path), "--out", str(tmp_path / "out")])
    assert "prompts.jsonl" in err and message in err


def test_good_options_keep_their_documented_spellings(bench, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"question": "b"}\n')
    cfg = bench.parse_args(["--prompts", str(path), "--max-new-tokens", "8", "--batch-sizes", "1,4",
                            "--num-threads", "1", "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert (cfg.max_new_tokens, bench.batch_sizes(cfg), cfg.num_threads, cfg.device) == (8, [1, 4], 1, "cpu")
    assert bench.prompt_texts(path) == ["a", "b"]


def test_k_max_and_mask_margin_replace_the_adaptive_bench_points(bench):
    default = dict(bench_settings())
    assert {"conf_adapt_0.9_kmax16_margin2", "verify_kmax4", "static_k3"} <= set(default)
    names = [n for n, _ in bench_settings(k_max=5, mask_margin=2)]
    assert len(names) == len(set(names)) and "static_k3" in names and "generate" in names
    adaptive = [n for n in names if n.startswith(("conf_adapt", "verify", "quadratic"))]
    assert adaptive and all("_kmax5_margin2" in n for n in adaptive)
    assert {"conf_adapt_0.9_kmax5_margin2", "verify_kmax5_margin2"} <= set(names)
    strategy = dict(bench_settings(k_max=5))["verify_kmax5"]
    assert (strategy.k_max, strategy.mask_margin) == (5, None)


def test_chat_template_wraps_each_prompt_as_a_user_turn(bench, tmp_path):
    from transformers import AutoTokenizer

    from selfdistill.models.loader import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-mtp"))  # the shipped adapter's tokenizer
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "What is 2 + 3?"}\n')
    plain, chat = (bench.load_prompts(bench.parse_args(["--prompts", str(path), "--chat_template", flag, "--out",
                                                        str(tmp_path / "out")]), tok, len(tok))
                   for flag in ("false", "true"))
    assert tok.decode(plain[0]) == "What is 2 + 3?"
    assert tok.decode(chat[0]) == tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                                          tokenize=False, add_generation_prompt=True)
