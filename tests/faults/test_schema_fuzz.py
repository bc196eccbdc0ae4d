"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (Schemathesis), against a live server:
whatever a client sends, no 5xx, and every error in the OpenAI envelope. A fixed example budget per operation and a
derandomised generator keep the run bounded and repeatable."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.faults.conftest import ADMIN_KEY, KeyedServer

EXAMPLES_PER_OPERATION = 25


def _operations() -> dict[str, Any]:
    """The served app's own schema, built without starting it (the same code a live server renders)."""
    from embedserve.api.app import create_app
    from tests.integration.conftest import fake_settings

    loaded = schemathesis.openapi.from_dict(create_app(fake_settings()).openapi())
    # An Err (a schema schemathesis cannot read) has no ok(): the AttributeError fails the run, as it should.
    operations = [result.ok() for result in loaded.get_all_operations()]  # type: ignore[union-attr]
    return {f"{op.method.upper()} {op.path}": op for op in operations}


OPERATIONS = _operations()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_input_gets_a_5xx_or_an_error_outside_the_envelope(label: str, keyed_server: KeyedServer) -> None:
    operation = OPERATIONS[label]
    admin = operation.path.startswith(("/admin", "/metrics"))
    headers = {"Authorization": f"Bearer {ADMIN_KEY if admin else keyed_server.secret}"}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call(base_url=keyed_server.url, headers=headers, timeout=60)
        where = f"{label} -> {response.status_code}"
        assert response.status_code < 500, f"{where}: {response.content[:500]!r}"
        if response.status_code >= 400:
            error = json.loads(response.content)["error"]
            assert set(error) == {"message", "type", "param", "code"}, where
            assert isinstance(error["message"], str) and error["message"], where

    check()
