"""`GET /api/v1/deposit-address?asset=`: the caller's current deposit address for an asset.

Goes through the wallet's registry (wallet/registry.py): the first call allocates and records
the user's address (derived from the configured account xpub; no private key on this host),
later calls return the same address. On Ethereum one address serves ETH and every ERC-20
token. The wallet config comes from `COFFER_WALLET_CONFIG` (wallet/config.py); without it
the endpoint answers 503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request

from api.auth import Principal
from api.errors import UnavailableError, ValidationError


def add_deposit_address_route(app: FastAPI, authenticate: Callable[[Request], Awaitable[Principal]]) -> None:
    @app.get("/api/v1/deposit-address", tags=["private"])
    async def deposit_address(request: Request, asset: str | None = None) -> dict[str, Any]:
        """Your deposit address for `asset` (allocated on first use, then stable)."""
        from wallet import registry
        from wallet.errors import UnknownAssetError, WalletError

        principal = await authenticate(request)
        ctx = request.app.state.ctx
        wallet = ctx.config.wallet
        if not asset:
            raise ValidationError("is required (e.g. BTC, ETH, USDT)", field="asset")
        if wallet is None:
            raise UnavailableError("deposit addresses are not configured on this server (COFFER_WALLET_CONFIG)")
        try:
            cfg = wallet.asset(asset.upper())
        except UnknownAssetError as exc:
            raise ValidationError(str(exc), field="asset") from None
        try:
            async with ctx.pool.acquire() as conn, conn.transaction():
                record, _created = await registry.allocate(conn, cfg, principal.user_id, gap_limit=wallet.gap_limit)
        except WalletError as exc:
            raise UnavailableError(f"cannot allocate a deposit address: {exc}") from exc
        return {"asset": cfg.code, "chain": record.chain, "network": record.network, "address": record.address,
                "token_contract": cfg.token}
