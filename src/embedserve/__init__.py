"""embedserve: a self-hosted, OpenAI-compatible embeddings API for BAAI/bge-large-en-v1.5."""

from __future__ import annotations

__version__ = "0.1.0"
