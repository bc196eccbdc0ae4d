"""``StoreAdmin``: the ``Admin`` interface over the key registry and the usage ledger."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from embedserve.accounting.keys import CreatedKey, KeyInfo, KeyRegistry
from embedserve.accounting.store import Store
from embedserve.accounting.usage import UsageRow, usage_report


class StoreAdmin:
    def __init__(self, *, store: Store, keys: KeyRegistry, clock: Callable[[], float]) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock

    async def list_keys(self, *, include_revoked: bool) -> Sequence[KeyInfo]:
        return await self._keys.list_keys(include_revoked=include_revoked)

    async def create_key(
        self, *, name: str, admin: bool, credits: int | None, rpm: int | None, tpm: int | None
    ) -> CreatedKey:
        return await self._keys.create(name=name, admin=admin, credits=credits, rpm=rpm, tpm=tpm)

    async def get_key(self, key_id: str) -> KeyInfo:
        return await self._keys.get(key_id)

    async def revoke_key(self, key_id: str) -> KeyInfo:
        return await self._keys.revoke(key_id)

    async def add_credits(self, key_id: str, amount: int) -> KeyInfo:
        return await self._keys.add_credits(key_id, amount)

    async def usage(self, *, days: int, key_id: str | None) -> Sequence[UsageRow]:
        return await usage_report(self._store, now=self._clock(), days=days, key_id=key_id)
