"""The HTTP layer: OpenAI wire protocol, routes, errors and middleware around the service."""

from __future__ import annotations

from embedserve.api.app import create_app

__all__ = ["create_app"]
