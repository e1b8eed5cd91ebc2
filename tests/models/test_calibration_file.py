"""The confidence map and its file (selfdistill/models/calibration.py): application by hand, validation, the tie to
the weights, and load_model attaching it (or refusing a stale one before any weights load)."""

import json
import shutil

import pytest
import torch

from selfdistill.models.calibration import (FILE, ConfidenceMap, calibration_from, read_calibration,
                                            save_calibration)
from selfdistill.models.loader import load_model, resolve_model_path

CMAP = ConfidenceMap(curves=(((0.0, 0.5, 1.0), (0.0, 0.2, 0.8)), ((0.0, 1.0), (0.1, 0.3))), method="platt")


def test_apply_by_hand():
    probs = torch.tensor([[0.3, 0.25, 0.5], [0.9, 0.75, 1.0]])
    out = CMAP.apply(probs)
    # column 0 is greedy's own token: 1; slot 2 interpolates (0.25 -> 0.1, 0.75 -> 0.5); slot 3: 0.1 + 0.2 x
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.1, 0.2], [1.0, 0.5, 0.3]]))
    with pytest.raises(ValueError, match="slots up to 3"):
        CMAP.apply(torch.rand(1, 4))


@pytest.mark.parametrize("curve, message", [
    (((0.0, 1.0), (0.5, 0.4)), "non-decreasing"),
    (((0.1, 1.0), (0.1, 0.4)), "rise strictly from 0 to 1"),
    (((0.0, 0.5, 0.5, 1.0), (0.1, 0.2, 0.3, 0.4)), "rise strictly"),
    (((0.0, 1.0), (0.0, 1.5)), "within"),
    (((0.0,), (0.0,)), "length >= 2"),
])
def test_a_bad_curve_is_refused(curve, message):
    with pytest.raises(ValueError, match=message):
        ConfidenceMap(curves=(curve,))


def test_dict_round_trip_and_slot_gaps():
    assert ConfidenceMap.from_dict(json.loads(json.dumps(CMAP.to_dict()))) == CMAP
    data = CMAP.to_dict()
    data["slots"] = {"2": data["slots"]["2"], "4": data["slots"]["3"]}
    with pytest.raises(ValueError, match="without gaps"):
        ConfidenceMap.from_dict(data)


@pytest.fixture()
def student_copy(tmp_path):
    return shutil.copytree(resolve_model_path("tiny-student"), tmp_path / "student")


def test_load_model_attaches_the_map_and_refuses_a_stale_one(student_copy):
    save_calibration(student_copy, CMAP, record={"note": "test"})
    assert read_calibration(student_copy) == CMAP
    model, _ = load_model(str(student_copy))
    assert calibration_from(model) == CMAP
    saved = json.loads((student_copy / FILE).read_text())
    assert saved["weights_file"] == "model.safetensors" and saved["record"] == {"note": "test"}

    with open(student_copy / "model.safetensors", "r+b") as f:  # other weights: the map no longer applies
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match=f"{FILE}: it was fitted to other weights"):
        load_model(str(student_copy))
    model, _ = load_model(str(student_copy), calibration=False)  # how scripts/calibrate.py refits it
    assert calibration_from(model) is None


def test_a_wrong_version_is_named(student_copy):
    save_calibration(student_copy, CMAP, record={})
    data = json.loads((student_copy / FILE).read_text())
    (student_copy / FILE).write_text(json.dumps(data | {"format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        read_calibration(student_copy)
    (student_copy / FILE).write_text("{not json")
    with pytest.raises(ValueError, match=FILE):
        read_calibration(student_copy)
