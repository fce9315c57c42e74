"""An OpenAI-compatible server (FastAPI + uvicorn) that serves a model with interventions applied,
batching concurrent requests and dropping the ones whose client went away.
"""

from __future__ import annotations

from axislens.serving.api import (
    APIError,
    ChatCompletionRequest,
    ServeLimits,
    parse_request,
)
from axislens.serving.engine import (
    Engine,
    background_server,
    create_app,
    serve,
)

__all__ = [
    "APIError",
    "ChatCompletionRequest",
    "Engine",
    "ServeLimits",
    "background_server",
    "create_app",
    "parse_request",
    "serve",
]
