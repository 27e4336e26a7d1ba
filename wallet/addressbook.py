"""In-memory owner look-up of deposit addresses for one chain and network (used by watchers).

`AddressBook(chain, network)` holds address -> user id for every deposit address ever
allocated on that chain/network (current or not: an old address still belongs to its user).
`refresh(conn)` loads only rows it has not seen. It must not miss a row whose transaction
took a lower id but committed after a later one, so besides the highest id it remembers the
oldest transaction still running at the previous refresh (`pg_snapshot_xmin`) and re-reads
rows created by transactions from there on; rows already known are skipped. Ethereum
addresses are matched case-insensitively, Bitcoin bech32 addresses case-insensitively too
(bech32 is case-insensitive by definition).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wallet.networks import check_chain, check_network

if TYPE_CHECKING:
    import asyncpg

# One statement, so the snapshot whose xmin we keep is the one the rows were read with.
_REFRESH_SQL = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin,
       coalesce(array_agg(d.id ORDER BY d.id), '{}') AS ids,
       coalesce(array_agg(d.address ORDER BY d.id), '{}') AS addresses,
       coalesce(array_agg(d.user_id ORDER BY d.id), '{}') AS user_ids
FROM deposit_addresses d
WHERE d.chain = $1 AND d.network = $2 AND (d.id > $3 OR d.created_xid >= $4::text::xid8)
"""


class AddressBook:
    """address -> user id for one (chain, network), refreshed incrementally from PostgreSQL."""

    __slots__ = ("_by_key", "_last_id", "_xmin", "chain", "network")

    def __init__(self, chain: str, network: str) -> None:
        self.chain = check_chain(chain)
        self.network = check_network(network)
        self._by_key: dict[str, int] = {}
        self._last_id = 0
        self._xmin = "0"

    @staticmethod
    def _key(address: str) -> str:
        return address.lower()

    async def refresh(self, conn: asyncpg.Connection) -> int:
        """Load rows not seen yet; returns how many addresses were added."""
        row = await conn.fetchrow(_REFRESH_SQL, self.chain, self.network, self._last_id, self._xmin)
        assert row is not None  # an aggregate without GROUP BY always returns one row
        added = 0
        by_key = self._by_key
        for row_id, address, user_id in zip(row["ids"], row["addresses"], row["user_ids"], strict=True):
            key = self._key(address)
            if key not in by_key:  # rows re-read from the xmin window are already known
                by_key[key] = int(user_id)
                added += 1
            self._last_id = max(self._last_id, int(row_id))
        self._xmin = str(row["xmin"])
        return added

    def owner(self, address: str) -> int | None:
        """The user id owning `address`, or None when it is not one of our deposit addresses."""
        return self._by_key.get(self._key(address))

    def addresses(self) -> frozenset[str]:
        """All known addresses in their matching form (lower-case)."""
        return frozenset(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self._key(address) in self._by_key

    def __repr__(self) -> str:
        return f"AddressBook(chain={self.chain!r}, network={self.network!r}, addresses={len(self)})"
