"""Keys, credits, rate limits and the usage ledger; knows nothing of HTTP or the engine.

``build_gateway(settings)`` (``factory.py``) is the one entry point the app uses; ``protocol.py`` says what a
gateway and its admin do, ``values.py`` what crosses the seam.
"""

from __future__ import annotations

from embedserve.accounting.factory import build_gateway
from embedserve.accounting.open_gateway import NoAuthGateway, OpenGateway
from embedserve.accounting.pricing import price
from embedserve.accounting.protocol import Admin, Gateway
from embedserve.accounting.values import Admission, Principal

__all__ = ["Admin", "Admission", "Gateway", "NoAuthGateway", "OpenGateway", "Principal", "build_gateway", "price"]
