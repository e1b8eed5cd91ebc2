"""The one model loader: aliases, local folders, clear errors for bad names, dtypes and devices."""

import pytest
import torch

import selfdistill
from selfdistill.models.loader import MODEL_SOURCES, load_model, resolve_device, resolve_dtype, resolve_model_path
from selfdistill.models.tiny import TINY_STUDENT_ALIAS, student_path


def test_alias_loads_the_shipped_student_in_eval_mode_with_a_pad_token():
    model, tok = load_model(TINY_STUDENT_ALIAS, dtype="float64", device="cpu")
    assert not model.training and model.dtype == torch.float64 and tok.pad_token is not None
    assert resolve_model_path(TINY_STUDENT_ALIAS) == str(student_path())


def test_local_folder_passes_through_and_a_hub_id_is_left_to_the_hub(tmp_path):
    assert resolve_model_path(str(student_path())) == str(student_path())
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("name", ["./no/such/ckpt", "/no/such/ckpt", "~/no-such-ckpt", "a/b/c", "not a name"])
def test_a_missing_path_says_so_and_names_the_aliases(name):
    with pytest.raises(FileNotFoundError, match="no such folder.*tiny-student"):
        resolve_model_path(name)


def test_a_folder_without_config_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither config.json nor gated_lora_config.json"):
        resolve_model_path(str(tmp_path))


def test_dtype_and_device_names():
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype(None) == "auto"
    assert resolve_dtype(torch.float64) is torch.float64
    assert resolve_device("auto") in ("cpu", "cuda") and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="unknown dtype 'fp33'"):
        resolve_dtype("fp33")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_public_api_is_reexported_at_the_top():
    assert selfdistill.load_model is load_model
    assert callable(selfdistill.mtp_generate) and selfdistill.DistillConfig.__name__ == "DistillConfig"
    with pytest.raises(AttributeError):
        selfdistill.no_such_name
    assert set(MODEL_SOURCES) >= {"tiny-teacher", "tiny-student"}


def test_trained_k_max_at_reads_checkpoints_and_adapters_without_loading(tmp_path):
    import json
    import shutil

    from selfdistill.models.gated_lora import CONFIG_FILE
    from selfdistill.models.loader import trained_k_max_at
    from selfdistill.models.mask_token import TRAINED_K_KEY

    assert trained_k_max_at(TINY_STUDENT_ALIAS) is None  # records none
    assert trained_k_max_at("HuggingFaceTB/SmolLM2-135M-Instruct") is None  # not local
    ckpt = tmp_path / "ckpt"
    shutil.copytree(student_path(), ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(config | {TRAINED_K_KEY: 6}))
    assert trained_k_max_at(str(ckpt)) == 6
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / CONFIG_FILE).write_text(json.dumps({"format": "selfdistill-gated-lora", "format_version": 1,
                                                   "trained_k_max": 5}))
    assert trained_k_max_at(str(adapter)) == 5


def test_a_misspelt_alias_says_no_such_alias_or_folder_and_names_the_aliases(monkeypatch):
    from selfdistill.models.loader import MODEL_SOURCES

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="'tiny-studnet': no such alias .*tiny-student.* or local folder"):
        load_model("tiny-studnet")
    assert "tiny-student" in MODEL_SOURCES


def test_an_adapter_finds_a_base_folder_named_relative_to_itself(tmp_path):
    import copy
    import json

    from selfdistill.models import gated_lora as gl
    from selfdistill.models.mask_token import add_mask_token
    from support import attach_random_adapter

    base, tok = load_model("tiny-teacher", dtype="float64")
    vocab = base.get_input_embeddings().weight.shape[0]
    base.save_pretrained(tmp_path / "pack" / "base")
    tok.save_pretrained(tmp_path / "pack" / "base")
    add_mask_token(base, tok)
    gated = attach_random_adapter(copy.deepcopy(base), tok, base_vocab_size=vocab)
    gl.save_gated_lora(gated, tok, tmp_path / "pack" / "adapter", base_model="../base")
    meta = json.loads((tmp_path / "pack" / "adapter" / gl.CONFIG_FILE).read_text())
    assert meta["base_model"] == "../base"
    loaded, _ = load_model(str(tmp_path / "pack" / "adapter"), dtype="float64")
    assert gl.gated_state(loaded) is not None


def test_an_added_mask_token_is_seeded_and_a_no_op_where_the_model_has_one(tmp_path):
    from selfdistill.models.mask_token import mask_token_id_from
    from support import save_tiny_checkpoint

    plain = str(save_tiny_checkpoint(tmp_path / "plain", with_mask_token=False))
    rows = []
    for seed in (3, 3, 4):
        model, tok = load_model(plain, dtype="float32", add_mask_token=True, seed=seed)
        rows.append(model.get_input_embeddings().weight[mask_token_id_from(model)].clone())
    assert torch.equal(rows[0], rows[1]) and not torch.equal(rows[0], rows[2])  # step-0 sweeps re-run identically
    student, _ = load_model("tiny-student", dtype="float32")
    again, _ = load_model("tiny-student", dtype="float32", add_mask_token=True)
    assert torch.equal(student.get_input_embeddings().weight, again.get_input_embeddings().weight)
