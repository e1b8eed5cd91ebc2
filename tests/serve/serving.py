"""Helpers of the server tests: the shipped tiny student served by uvicorn in a background thread on a free
127.0.0.1 port (started and stopped by the tests), and prompts it answers sensibly. Not a test module."""

from __future__ import annotations

import threading
import time

NAME = "tiny-student"
#: A plain template, since the tiny student's tokenizer has none.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


class ServerThread:
    """``with ServerThread(app) as server: server.url``; bounded start-up wait, stopped on exit."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(400):  # at most ~20 s
            if self.server.started or not self.thread.is_alive():
                break
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("the test server did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


def prompts(n: int) -> list[str]:
    """``n`` synthetic test questions in the zero-shot format the tiny student was distilled on."""
    from selfdistill.data.prompts import render_prompt
    from selfdistill.eval.task_suites import suite_rows

    rows = suite_rows("synthetic", limit=max(1, n // 5 + 1))
    return [render_prompt(r, style="zero_shot") for r in rows[:n]]
