"""Reads of device values per decoding pass (#33 item 3), counted on the CPU by :class:`support.HostReads` (each is
a host sync on a GPU). The stated counts, on the shipped tiny student (it has a confidence map, so ConfAdapt runs
calibrated):

- one ``.tolist()`` per model call: the accepted tokens (lossless strategies: exactly that);
- a lossy strategy reads the model's own greedy tokens once more on passes that re-fed drafts (draft precision);
- when a finished row leaves the batch, at most one ``bool`` and one ``nonzero`` to drop its cache columns;
- no ``float()``/``.item()`` at all (the calibration curves clamp on the device);
- transformers' own prefill mask check: one ``bool`` per decode with sdpa.
"""

import pytest

from selfdistill.decode.decoder import mtp_generate
from selfdistill.models.loader import load_model
from support import HostReads

PROMPTS = ["Q: Tom has 3 apples and gets 4 more. How many apples does Tom have?\nA:", "Q: What is 2 + 2?\nA:"]


@pytest.fixture(scope="module")
def student():
    return load_model("tiny-student", dtype="float32")


@pytest.mark.parametrize("strategy, options, lossless", [
    ("verify", {}, True), ("quadratic", {}, True), ("conf_adapt", dict(threshold=0.9), False),
    ("static", dict(k=3), False)])
def test_a_pass_reads_the_device_once_or_twice(student, strategy, options, lossless):
    model, tok = student
    ids = [tok(p).input_ids for p in PROMPTS]
    with HostReads() as reads:
        out = mtp_generate(model, ids, strategy=strategy, max_new_tokens=24, **options)
    counts, calls = dict(reads.counts), out.model_calls
    tolist = counts.pop("tolist")
    assert tolist == calls if lossless else calls <= tolist <= 2 * calls
    assert counts.pop("nonzero", 0) <= len(PROMPTS) and counts.pop("__bool__", 0) <= len(PROMPTS) + 1
    assert counts == {}  # no float(), .item(), boolean index or anything else
