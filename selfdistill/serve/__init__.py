"""An OpenAI-compatible HTTP server over the decoding engine (``python -m selfdistill.serve``, docs/serve.md).

- :mod:`~selfdistill.serve.schemas`: request bodies, unsupported parameters, the OpenAI-style error;
- :mod:`~selfdistill.serve.plan`: a request -> prompts, budget, stop strings, decoding setting (all checks);
- :mod:`~selfdistill.serve.scheduler`: the one thread that drives an engine per decoding setting;
- :mod:`~selfdistill.serve.responses`: response bodies, usage with tokens per forward, streamed text deltas;
- :mod:`~selfdistill.serve.app`: the FastAPI routes (:func:`~selfdistill.serve.app.create_app`);
- :mod:`~selfdistill.serve.__main__`: the command line (``ServeConfig``).
"""
