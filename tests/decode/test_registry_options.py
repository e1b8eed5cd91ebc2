"""Strategy options given as text (lm-eval ``model_args``) and the places that must name every option."""

from dataclasses import fields

import pytest

from selfdistill.decode.registry import declared_options, make_strategy, pop_options
from selfdistill.eval.evaluation import DecodeSetting


def test_pop_options_takes_only_strategy_options_and_parses_their_text():
    kwargs = {"k_max": "6", "threshold": "0.75", "lead_groups": 2, "mask_margin": "None", "batch_size": "4",
              "dtype": "float32"}
    options = pop_options(kwargs)
    assert options == {"k_max": 6, "threshold": 0.75, "lead_groups": 2, "mask_margin": None}
    assert type(options["k_max"]) is int and type(options["threshold"]) is float
    assert kwargs == {"batch_size": "4", "dtype": "float32"}  # the rest stays for HFLM


def test_pop_options_names_the_option_whose_text_does_not_parse():
    with pytest.raises(ValueError, match="option lead_groups: '1.5' is not a valid int"):
        pop_options({"lead_groups": "1.5"})
    with pytest.raises(ValueError, match="option threshold: 'high' is not a valid float"):
        pop_options({"threshold": "high"})


def test_parsed_options_are_still_checked_by_the_strategy():
    with pytest.raises(ValueError, match="hedged option lead_groups must be an int >= 1"):
        make_strategy("hedged", **pop_options({"lead_groups": "0"}))
    with pytest.raises(ValueError, match="takes no option lead_groups"):
        make_strategy("verify", **pop_options({"lead_groups": "2"}))


def test_every_declared_option_is_a_decode_setting_field():
    assert set(DecodeSetting.option_names()) == set(declared_options())
    setting = DecodeSetting(strategy="hedged", k_max=5, lead_groups=2)
    assert setting.name == "hedged2_kmax5" and setting.options()["lead_groups"] == 2


def test_every_declared_option_is_a_serve_flag():
    from selfdistill.serve.__main__ import ServeConfig

    assert set(declared_options()) <= {f.name for f in fields(ServeConfig)}
    cfg = ServeConfig(strategy="hedged", lead_groups=2, k_max=5)
    assert make_strategy(cfg.strategy, **cfg.strategy_options()).lead_groups == 2
