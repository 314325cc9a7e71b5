"""`llmaccel serve`: an OpenAI-compatible HTTP server over the engine.

    protocol.py  request bodies -> checked Jobs (pure; every problem an ApiError in OpenAI's shape)
    worker.py    the thread that owns the model and runs jobs one at a time from a bounded queue
    text.py      token ids -> the text a client sees (stop strings, no half characters)
    metrics.py   Prometheus metrics
    app.py       FastAPI routes, streaming (server-sent events), keys, errors
"""

from __future__ import annotations

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str):
    if name in __all__:
        from llmaccel.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'llmaccel.server' has no attribute {name!r}")
