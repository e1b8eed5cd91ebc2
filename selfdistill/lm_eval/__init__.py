"""``python -m selfdistill.lm_eval``: lm-evaluation-harness with the ``selfdistill`` model and our offline task
YAMLs loaded (lm-eval's own CLI does not import plugins). The plugin itself is :mod:`selfdistill.eval.harness`."""
