"""First start: if the store holds no key, create one (and an admin key if none is configured), show it once.

A marker row makes this happen once even when several replicas start together on an empty database.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import sqlalchemy as sa

from embedserve.accounting.keys import KeyRegistry
from embedserve.accounting.schema import api_keys, markers
from embedserve.accounting.store import Store


def announce_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


USER_NOTICE = """
================================================================================
embedserve: the key store was empty, so this API key was created (unlimited credits).
It is shown only this once; only its hash is stored:

    {secret}

Send it as 'Authorization: Bearer <key>' (OPENAI_API_KEY for the OpenAI SDKs).
More keys: embedserve keys create --name NAME [--credits N] [--rpm N] [--tpm N]
================================================================================"""

ADMIN_NOTICE = """
================================================================================
embedserve: no admin key was configured, so this one was created for /admin and /metrics.
It is shown only this once; only its hash is stored (or set EMBEDSERVE_ADMIN_KEY):

    {secret}
================================================================================"""


async def create_first_key(
    store: Store, registry: KeyRegistry, *, admin: bool, clock: Callable[[], float]
) -> str | None:
    """Create the first key of a kind if there is none; returns its secret, or None when nothing was made."""
    kind = "admin" if admin else "user"
    try:
        async with store.begin() as conn:
            query = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.kind == kind)
            if (await conn.execute(query)).scalar_one():
                return None
            # Replicas starting together on an empty database: the second one fails on this row and skips.
            await conn.execute(markers.insert().values(name=f"bootstrap:{kind}", created_at=clock()))
            stmt, _key_id, secret = registry.insert_statement(name="admin" if admin else "default", admin=admin)
            await conn.execute(stmt)
    except sa.exc.IntegrityError:
        return None
    return secret
