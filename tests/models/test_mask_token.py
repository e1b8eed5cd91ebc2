"""<mtp>: added once (idempotent), embeddings resized, id saved with the checkpoint and found again."""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfdistill.models.mask_token import (MASK_TOKEN, add_mask_token, mask_token_id_from, mask_token_id_in_checkpoint,
                                           set_mask_token_id, set_trained_k_max, trained_k_max_from)
from selfdistill.models.tiny import teacher_path


def test_add_is_idempotent_resizes_and_survives_save_and_reload(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(teacher_path())
    tok = AutoTokenizer.from_pretrained(teacher_path())
    old_rows = model.get_input_embeddings().weight.shape[0]
    assert mask_token_id_from(model) is None and mask_token_id_in_checkpoint(str(teacher_path())) is None

    mask_id = add_mask_token(model, tok, num_reserved=4)
    assert tok.convert_tokens_to_ids(MASK_TOKEN) == mask_id == old_rows  # first new row
    assert model.get_input_embeddings().weight.shape[0] == old_rows + 4
    assert add_mask_token(model, tok) == mask_id and len(tok) == old_rows + 4  # second call changes nothing

    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert mask_token_id_in_checkpoint(str(tmp_path)) == mask_id
    assert mask_token_id_from(AutoModelForCausalLM.from_pretrained(tmp_path)) == mask_id


def test_mismatched_tokenizer_and_bad_ids_are_refused():
    model = AutoModelForCausalLM.from_pretrained(teacher_path())
    tok = AutoTokenizer.from_pretrained(teacher_path())
    set_mask_token_id(model, 7)  # claims id 7, but the tokenizer has no <mtp> at all
    with pytest.raises(ValueError, match="do not belong together"):
        add_mask_token(model, tok)
    with pytest.raises(ValueError, match="outside the embedding matrix"):
        set_mask_token_id(model, 10**6)


def test_trained_k_max_is_saved_with_the_checkpoint(tmp_path):
    model = AutoModelForCausalLM.from_pretrained(teacher_path())
    assert trained_k_max_from(model) is None  # a base model does not claim any
    set_trained_k_max(model, 5)
    model.save_pretrained(tmp_path)
    assert trained_k_max_from(AutoModelForCausalLM.from_pretrained(tmp_path)) == 5
    for bad in (0, 2.0, True, None):
        with pytest.raises(ValueError, match="trained k_max"):
            set_trained_k_max(model, bad)


def test_mask_token_ids_are_the_mask_and_its_reserved_siblings():
    from selfdistill.models.mask_token import mask_token_ids

    tok = AutoTokenizer.from_pretrained(teacher_path())
    assert mask_token_ids(tok) == []
    tok.add_special_tokens({"additional_special_tokens": ["<mtpx>", "<other>"]})
    model = AutoModelForCausalLM.from_pretrained(teacher_path())
    first = add_mask_token(model, tok, num_reserved=3)
    assert mask_token_ids(tok) == [first, first + 1, first + 2]  # "<mtpx>" and "<other>" are not masks


def test_require_mask_token_is_the_one_check_for_folders_and_loaded_models(tmp_path):
    from selfdistill.models.mask_token import require_mask_token
    from support import save_tiny_checkpoint

    plain = save_tiny_checkpoint(tmp_path / "plain", with_mask_token=False)
    with_mask = save_tiny_checkpoint(tmp_path / "mtp", with_mask_token=True)
    require_mask_token(str(with_mask), needed_by="x", remedy="y")  # fine
    require_mask_token("some-org/some-hub-model", needed_by="x", remedy="y")  # a hub id: checked once loaded
    with pytest.raises(ValueError, match=r"plain has no <mtp> mask token .*so ConfAdapt cannot feed masks: train it"):
        require_mask_token(str(plain), needed_by="ConfAdapt", remedy="train it")
    from selfdistill.models.loader import load_model

    model, _ = load_model(str(plain), dtype="float32")
    with pytest.raises(ValueError, match="has no <mtp> mask token, so verify cannot feed masks"):
        require_mask_token(model, needed_by="verify", remedy="train it")
