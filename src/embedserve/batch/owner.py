"""Who may see a file or a batch: the key that made it, or the operator (admin key), who sees all."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa


@dataclass(frozen=True, slots=True)
class Owner:
    key_id: str | None  # None when auth is off
    admin: bool = False

    def visible(self, column: sa.Column[str]) -> sa.ColumnElement[bool]:
        """The WHERE clause restricting a table to what this caller may see."""
        if self.admin:
            return sa.true()
        if self.key_id is None:
            return column.is_(None)
        return column == self.key_id
