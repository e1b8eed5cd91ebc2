"""The server the tests of this folder share: the shipped tiny student in float64 (batched rows bit-identical to
rows alone), the server's own setting ConfAdapt 0.9, a plain chat template; uvicorn in a background thread on a free
127.0.0.1 port, started once and stopped after the last test."""

import pytest
from serving import CHAT_TEMPLATE, NAME, ServerThread

pytest.importorskip("fastapi")


@pytest.fixture(scope="session")
def loaded():
    from selfdistill.models.loader import load_model

    return load_model(NAME, dtype="float64")


@pytest.fixture(scope="session")
def server(loaded):
    from selfdistill.decode.registry import make_strategy
    from selfdistill.serve.app import create_app

    model, tok = loaded
    app = create_app(model, tok, model_name=NAME, strategy=make_strategy("conf_adapt", threshold=0.9),
                     max_batch=16, chat_template=CHAT_TEMPLATE)
    with ServerThread(app) as running:
        yield running
