"""The HTTP service: ``captioner serve`` (FastAPI + uvicorn) and its web page.

Owns the request limits (``settings``), the micro-batcher that turns requests which arrive
together into one forward pass on a dedicated model thread (``batcher``), the routes and their
JSON error bodies (``app``), and the static page in ``static/``. It calls the model only through
``captioner.api.Captioner`` and reads uploads only through ``captioner.data.images``, so the
service captions exactly what the CLI would. FastAPI is an optional dependency
(``pip install 'captioner[serve]'``): nothing outside this package imports it.
"""

from __future__ import annotations

from captioner.serving.settings import ServerSettings

__all__ = ["ServerSettings"]
