"""Withdrawal endpoints of the trading API: POST /api/v1/withdrawals and GET /api/v1/withdrawals.

POST (signed) takes `{"asset", "address", "amount", "client_id"?}`. `amount` is a decimal string
of what the destination receives; the asset's withdrawal fee comes on top, and amount + fee is
what the ledger holds. Validated here before anything is sent: the asset exists; the address is
valid for the asset's chain and network (`wallet.addresses.validate_address`: checksum, network,
witness version, EIP-55); the amount has at most the asset's ledger decimals and is at least its
minimum withdrawal; the available balance covers amount + fee. The request then goes through
the user's intake stream like orders (so one user's commands stay in order); the ledger checks
again inside its transaction and holds the funds. Answers: 201 with the withdrawal (status
`held`), 400 with the reason (nothing held), or 202 `pending` when the ledger has not answered in
time. `client_id` makes a retry idempotent (the same withdrawal is answered, `duplicate: true`).
GET lists the caller's withdrawals, newest first, with the processor's stage and the txid.
The router is included by `api.trading_app` (`app.include_router(router)`); it sends through the
trading app's `OrderPath.request_reply` and authenticates with its `authenticate`.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.amounts import format_units, parse_positive, to_units
from api.errors import ApiError, UnavailableError, ValidationError

router = APIRouter(tags=["private"])
PATH = "/api/v1/withdrawals"
CLIENT_ID_MAX = 36


class WithdrawalRequestBody(BaseModel):
    """The body of POST /api/v1/withdrawals (documentation; the handler validates the raw JSON)."""

    asset: str = Field(examples=["BTC"])
    address: str = Field(description="destination on the asset's chain and network")
    amount: str = Field(description="decimal string the destination receives; the withdrawal fee comes on top")
    client_id: str | None = Field(default=None, max_length=CLIENT_ID_MAX)


class WithdrawalRejectedError(ApiError):
    status_code = 400
    code = "rejected"


def _view(row: Any) -> dict[str, Any]:
    decimals = int(row["ledger_decimals"])
    amount, fee = int(row["amount"]), int(row["fee"])
    stage = row["stage"]
    status = row["state"] if row["state"] in ("settled", "released") else (stage or "held")
    return {"id": int(row["id"]), "asset": row["asset"], "address": row["address"],
            "amount": format_units(amount - fee, decimals), "fee": format_units(fee, decimals),
            "held": format_units(amount, decimals), "status": status, "ledger_state": row["state"],
            "txid": row["txid"], "reason": row["reason"],
            "client_id": (row["request_id"] or "").split(":", 1)[1] if ":" in (row["request_id"] or "") else None,
            "created_ms": int(row["created_at"].timestamp() * 1000)}


_SELECT = ("SELECT w.id, w.asset, w.address, w.amount, w.fee, w.state, w.txid, "
           "coalesce(w.reason, p.reason) AS reason, w.request_id, w.created_at, p.stage, a.ledger_decimals "
           "FROM withdrawals w JOIN assets a ON a.code = w.asset LEFT JOIN wd_proc p ON p.withdrawal_id = w.id")


def _body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"malformed JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("a JSON object with asset, address and amount is required", field="body")
    unknown = set(body) - {"asset", "address", "amount", "client_id"}
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}", field="body")
    for name in ("asset", "address", "amount"):
        if name not in body:
            raise ValidationError("is required", field=name)
        if not isinstance(body[name], str):
            raise ValidationError("must be a string", field=name)
    cid = body.get("client_id")
    if cid is not None and (not isinstance(cid, str) or not 0 < len(cid) <= CLIENT_ID_MAX or not cid.isprintable()):
        raise ValidationError(f"must be a printable string of 1 to {CLIENT_ID_MAX} characters", field="client_id")
    return body


@router.post(PATH, status_code=201,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": WithdrawalRequestBody.model_json_schema()}}}},
             responses={202: {"description": "sent, the ledger has not answered yet (status pending)"},
                        400: {"description": "invalid field, or refused by the ledger; nothing is held"}})
async def request_withdrawal(request: Request) -> JSONResponse:
    """Withdraw `amount` of `asset` to `address`; amount + the asset's fee is held until it is sent."""
    from api.trading_app import authenticate
    from ledger.intake_protocol import WithdrawRequest
    from wallet.addresses import validate_address
    from wallet.errors import WalletError

    principal = await authenticate(request)
    body = _body(await request.body())
    ctx = request.app.state.ctx
    cid = body.get("client_id")
    rid = f"{principal.user_id}:{cid}" if cid else secrets.token_hex(8)
    if cid:
        prior = await ctx.pool.fetchrow(_SELECT + " WHERE w.request_id = $1 AND w.user_id = $2", rid,
                                        principal.user_id)
        if prior is not None:  # a retry: the same withdrawal, nothing held twice
            return JSONResponse({**_view(prior), "duplicate": True}, 200)
    asset = await ctx.pool.fetchrow(
        "SELECT code, chain, network, ledger_decimals, withdrawal_fee, min_withdrawal FROM assets WHERE code = $1",
        body["asset"].upper())
    if asset is None:
        raise ValidationError(f"unknown asset {body['asset']!r}", field="asset")
    try:
        address = validate_address(body["address"], asset["chain"], asset["network"])
    except WalletError as exc:
        raise ValidationError(f"not a valid {asset['code']} address on {asset['network']}: {exc}",
                              field="address") from None
    decimals = int(asset["ledger_decimals"])
    amount = to_units("amount", parse_positive("amount", body["amount"]), decimals)
    fee, minimum = int(asset["withdrawal_fee"]), int(asset["min_withdrawal"])
    if amount + fee < minimum or amount <= 0:
        raise ValidationError(f"is below the minimum withdrawal of {format_units(max(minimum - fee, 1), decimals)} "
                              f"{asset['code']} (plus the fee of {format_units(fee, decimals)})", field="amount")
    available = await ctx.pool.fetchval(
        "SELECT available FROM balances WHERE user_id = $1 AND asset = $2", principal.user_id, asset["code"])
    if int(available or 0) < amount + fee:
        raise ValidationError(
            f"insufficient available {asset['code']}: amount plus fee is {format_units(amount + fee, decimals)}, "
            f"available {format_units(int(available or 0), decimals)}", field="amount")
    path = request.app.state.order_path
    req = WithdrawRequest(rid=rid, reply_to=path.reply_channel, user=principal.user_id, asset=asset["code"],
                          amount=format_units(amount + fee, decimals), address=address,
                          ts_ms=time.time_ns() // 1_000_000)
    reply = await path.request_reply(principal.user_id, req, time.monotonic() + path.wait_s)
    if reply is None:
        return JSONResponse({"id": None, "status": "pending", "request_id": rid, "client_id": cid,
                             "detail": "the ledger has not answered yet; list your withdrawals later"}, 202)
    if not reply.ok or reply.state == "rejected":
        raise WithdrawalRejectedError(reply.reason or "the withdrawal was refused")
    if reply.withdrawal_id is None:
        raise UnavailableError("the ledger answered without a withdrawal id")
    row = await ctx.pool.fetchrow(_SELECT + " WHERE w.id = $1 AND w.user_id = $2", reply.withdrawal_id,
                                  principal.user_id)
    if row is None:
        raise UnavailableError(f"withdrawal {reply.withdrawal_id} was accepted but cannot be read back")
    view = _view(row)
    if reply.duplicate:
        view["duplicate"] = True
        return JSONResponse(view, 200)
    return JSONResponse(view, 201)


@router.get(PATH)
async def list_withdrawals(request: Request,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """Your withdrawals, newest first: amount sent, fee, status (held, review, broadcast, settled, ...), txid."""
    from api.trading_app import authenticate

    principal = await authenticate(request)
    rows = await request.app.state.ctx.pool.fetch(_SELECT + " WHERE w.user_id = $1 ORDER BY w.id DESC LIMIT $2",
                                                  principal.user_id, limit)
    return [_view(r) for r in rows]
