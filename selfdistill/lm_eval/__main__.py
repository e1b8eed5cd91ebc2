"""``python -m selfdistill.lm_eval``: the entry point; the command lives in :mod:`selfdistill.eval.lm_eval_cli`."""

from selfdistill.eval.lm_eval_cli import main

if __name__ == "__main__":
    main()
