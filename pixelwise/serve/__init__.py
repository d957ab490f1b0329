"""Serving: the HTTP API (FastAPI) and the web page."""

from pixelwise.serve.app import create_app

__all__ = ["create_app"]
