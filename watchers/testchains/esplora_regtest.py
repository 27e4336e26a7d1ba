"""The Esplora-compatible HTTP server of the Bitcoin regtest test chain (`coffer chain btc`).

Serves Esplora's REST endpoints with Esplora's JSON field names over a `RegtestChain`:
GET /blocks/tip/height, /blocks/tip/hash, /block-height/:h, /block/:hash (+ /status, /txids,
/txs[/:start], /header, /raw), /tx/:txid (+ /status, /hex, /raw, /outspend/:vout, /outspends),
/address/:a and /scripthash/:sha256 (+ /txs, /txs/chain[/:last_txid], /txs/mempool, /utxo),
/mempool/txids,
/fee-estimates, POST /tx (hex body; 400 with Bitcoin Core's reject text). Control endpoints
(JSON bodies, never faulted): POST /regtest/mine {blocks, address?}, /regtest/faucet
{address, amount_sat}, /regtest/reorg {depth, new_blocks, drop_txids?}, /regtest/faults
{count, status?, delay_ms?}; GET /regtest/info. State is in memory only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from watchers.testchains._http import ChainHTTPServer, FaultInjector, PeriodicMiner, Reply
from watchers.testchains.errors import NotFoundError, TxRejectedError
from watchers.testchains.regtest_chain import (
    Block,
    RegtestChain,
    is_coinbase,
    regtest_script,
    script_address,
    serialize_no_witness,
    tx_weight,
)

log = logging.getLogger(__name__)
PAGE = 25
MEMPOOL_PAGE = 50
REGTEST_DIFFICULTY = 4.656542373906925e-10
# Fixed fee estimates in sat/vB by confirmation target, as Esplora's /fee-estimates shape.
FEE_ESTIMATES_SAT_VB = {"1": 5.0, "2": 4.0, "3": 3.0, "6": 2.0, "10": 1.5, "144": 1.0, "504": 1.0, "1008": 1.0}
_FAULT_BODIES = {429: b"Too Many Requests", 500: b"Internal Server Error", 502: b"Bad Gateway",
                 503: b"Service Unavailable", 504: b"Gateway Timeout"}


def _text(body: str, status: int = 200) -> Reply:
    return Reply(status, body.encode(), "text/plain")


def _json(obj: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(obj).encode(), "application/json")


def _script_type(script: bytes) -> str:
    if len(script) == 22 and script[:2] == b"\x00\x14":
        return "v0_p2wpkh"
    if len(script) == 34 and script[:2] == b"\x00\x20":
        return "v0_p2wsh"
    if len(script) == 34 and script[:2] == b"\x51\x20":
        return "v1_p2tr"
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[-2:] == b"\x88\xac":
        return "p2pkh"
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[-1] == 0x87:
        return "p2sh"
    if script[:1] == b"\x6a":
        return "op_return"
    return "unknown"


def _asm(script: bytes) -> str:
    """A readable disassembly of push-only / common scripts (Esplora style, best effort)."""
    names = {0x00: "OP_0", 0x51: "OP_PUSHNUM_1", 0x6A: "OP_RETURN", 0x76: "OP_DUP", 0xA9: "OP_HASH160",
             0x87: "OP_EQUAL", 0x88: "OP_EQUALVERIFY", 0xAC: "OP_CHECKSIG"}
    parts: list[str] = []
    i = 0
    while i < len(script):
        op = script[i]
        i += 1
        if 0x01 <= op <= 0x4B:
            parts.append(f"OP_PUSHBYTES_{op} {script[i:i + op].hex()}")
            i += op
        else:
            parts.append(names.get(op, f"OP_UNKNOWN_{op:#04x}"))
    return " ".join(parts)


def _vout_json(txout: Any) -> dict[str, Any]:
    script = bytes(txout.script_pubkey.data)
    out: dict[str, Any] = {"scriptpubkey": script.hex(), "scriptpubkey_asm": _asm(script),
                           "scriptpubkey_type": _script_type(script)}
    address = script_address(script)
    if address is not None:
        out["scriptpubkey_address"] = address
    out["value"] = int(txout.value)
    return out


def _status_json(chain: RegtestChain, txid: str) -> dict[str, Any]:
    return chain.tx_status(txid)


def tx_json(chain: RegtestChain, tx: Any) -> dict[str, Any]:
    """Esplora's transaction object."""
    txid = bytes(tx.txid()).hex()
    coinbase = is_coinbase(tx)
    vin = []
    for txin in tx.vin:
        prev = None if coinbase else chain.prevout(txin)
        script_sig = bytes(txin.script_sig.data)
        entry: dict[str, Any] = {
            "txid": bytes(txin.txid).hex(), "vout": int(txin.vout),
            "prevout": _vout_json(prev) if prev is not None else None,
            "scriptsig": script_sig.hex(), "scriptsig_asm": "" if coinbase else _asm(script_sig),
            "witness": [bytes(w).hex() for w in txin.witness.items],
            "is_coinbase": coinbase, "sequence": int(txin.sequence),
        }
        if not entry["witness"]:
            del entry["witness"]
        vin.append(entry)
    return {
        "txid": txid, "version": int(tx.version), "locktime": int(tx.locktime), "vin": vin,
        "vout": [_vout_json(o) for o in tx.vout], "size": len(tx.serialize()), "weight": tx_weight(tx),
        "fee": chain.fee_sat(tx), "status": _status_json(chain, txid),
    }


def block_json(chain: RegtestChain, block: Block) -> dict[str, Any]:
    """Esplora's block object."""
    start = max(0, block.height - 10)
    times = sorted(chain.blocks[chain.chain[h]].time for h in range(start, block.height + 1)
                   if h < len(chain.chain)) if chain.in_best_chain(block) else [block.time]
    out: dict[str, Any] = {
        "id": block.hash, "height": block.height, "version": block.version, "timestamp": block.time,
        "tx_count": len(block.txs), "size": block.size, "weight": block.weight, "merkle_root": block.merkle_root,
        "previousblockhash": block.prev_hash, "mediantime": times[len(times) // 2], "nonce": block.nonce,
        "bits": block.bits, "difficulty": REGTEST_DIFFICULTY,
    }
    if block.height == 0:
        out["previousblockhash"] = None
    return out


class EsploraServer:
    """A `RegtestChain` behind Esplora's REST API on 127.0.0.1, with control and fault endpoints."""

    def __init__(self, chain: RegtestChain, host: str = "127.0.0.1", port: int = 0,
                 block_time_s: float | None = None) -> None:
        self.chain = chain
        self._http = ChainHTTPServer(self.handle, host, port)
        self._faults = FaultInjector(_FAULT_BODIES)
        self._block_time_s = block_time_s
        self._miner: PeriodicMiner | None = None
        self._get_routes: list[tuple[re.Pattern[str], Callable[..., Reply]]] = [
            (re.compile(p), f) for p, f in (
                (r"/blocks/tip/height", self._tip_height),
                (r"/blocks/tip/hash", self._tip_hash),
                (r"/blocks(?:/(\d+))?", self._blocks),
                (r"/block-height/(\d+)", self._block_height),
                (r"/block/([0-9a-fA-F]{64})", self._block),
                (r"/block/([0-9a-fA-F]{64})/status", self._block_status),
                (r"/block/([0-9a-fA-F]{64})/txids", self._block_txids),
                (r"/block/([0-9a-fA-F]{64})/txid/(\d+)", self._block_txid),
                (r"/block/([0-9a-fA-F]{64})/txs(?:/(\d+))?", self._block_txs),
                (r"/block/([0-9a-fA-F]{64})/header", self._block_header),
                (r"/block/([0-9a-fA-F]{64})/raw", self._block_raw),
                (r"/tx/([0-9a-fA-F]{64})", self._tx),
                (r"/tx/([0-9a-fA-F]{64})/status", self._tx_status),
                (r"/tx/([0-9a-fA-F]{64})/hex", self._tx_hex),
                (r"/tx/([0-9a-fA-F]{64})/raw", self._tx_raw),
                (r"/tx/([0-9a-fA-F]{64})/outspend/(\d+)", self._tx_outspend),
                (r"/tx/([0-9a-fA-F]{64})/outspends", self._tx_outspends),
                (r"/(address|scripthash)/([^/]+)", self._address),
                (r"/(address|scripthash)/([^/]+)/txs", self._address_txs),
                (r"/(address|scripthash)/([^/]+)/txs/chain(?:/([0-9a-fA-F]{64}))?", self._address_txs_chain),
                (r"/(address|scripthash)/([^/]+)/txs/mempool", self._address_txs_mempool),
                (r"/(address|scripthash)/([^/]+)/utxo", self._address_utxo),
                (r"/mempool/txids", self._mempool_txids),
                (r"/fee-estimates", lambda: _json(FEE_ESTIMATES_SAT_VB)),
                (r"/regtest/info", self._info),
            )
        ]

    @property
    def url(self) -> str:
        return self._http.url

    # -- dispatch -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path.startswith("/api/"):
            path = path[4:]  # blockstream.info style prefix
        if not path.startswith("/regtest/"):
            fault = self._faults.take()
            if fault is not None:
                return fault
        try:
            if method == "POST":
                return self._post(path, body)
            for pattern, fn in self._get_routes:
                match = pattern.fullmatch(path)
                if match:
                    with self.chain.lock:
                        return fn(*match.groups())
            return _text(f"Cannot GET {path}", 404)
        except NotFoundError as exc:
            return _text(str(exc), 404)
        except TxRejectedError as exc:
            return _text(str(exc), 400)
        except ValueError as exc:
            return _text(str(exc), 400)

    def _post(self, path: str, body: bytes) -> Reply:
        if path == "/tx":
            return _text(self.chain.submit_hex(body.decode("ascii", "replace")))
        if not path.startswith("/regtest/"):
            return _text(f"Cannot POST {path}", 404)
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            return _text("control endpoints take a JSON object", 400)
        if not isinstance(args, dict):
            return _text("control endpoints take a JSON object", 400)
        if path == "/regtest/mine":
            script = regtest_script(args["address"]) if args.get("address") else None
            return _json(self.chain.mine(_int_arg(args, "blocks", 1), script))
        if path == "/regtest/faucet":
            if "address" not in args:
                return _text("faucet needs address and amount_sat", 400)
            txid = self.chain.faucet(str(args["address"]), _int_arg(args, "amount_sat", 0))
            return _json({"txid": txid})
        if path == "/regtest/reorg":
            drop = args.get("drop_txids") or []
            if not isinstance(drop, list):
                return _text("drop_txids must be a list of txids", 400)
            script = regtest_script(args["address"]) if args.get("address") else None
            return _json(self.chain.reorg(_int_arg(args, "depth", 1), _int_arg(args, "new_blocks", 1),
                                          [str(t) for t in drop], script))
        if path == "/regtest/faults":
            status = args.get("status", 429)
            if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
                return _text("status must be an HTTP status code or null", 400)
            count = _int_arg(args, "count", 1)
            delay_ms = _int_arg(args, "delay_ms", 0)
            if count < 0 or delay_ms < 0:
                return _text("count and delay_ms must be >= 0", 400)
            self._faults.set(count, status, delay_ms / 1000)
            return _json({"count": count, "status": status, "delay_ms": delay_ms})
        return _text(f"Cannot POST {path}", 404)

    # -- blocks -------------------------------------------------------------------------------

    def _tip_height(self) -> Reply:
        return _text(str(self.chain.tip().height))

    def _tip_hash(self) -> Reply:
        return _text(self.chain.tip().hash)

    def _blocks(self, start: str | None) -> Reply:
        height = min(int(start), self.chain.tip().height) if start is not None else self.chain.tip().height
        return _json([block_json(self.chain, self.chain.blocks[self.chain.chain[h]])
                      for h in range(height, max(-1, height - 10), -1)])

    def _block_height(self, height: str) -> Reply:
        h = int(height)
        if h >= len(self.chain.chain):
            raise NotFoundError("Block not found")
        return _text(self.chain.chain[h])

    def _block(self, block_hash: str) -> Reply:
        return _json(block_json(self.chain, self.chain.block(block_hash)))

    def _block_status(self, block_hash: str) -> Reply:
        block = self.chain.block(block_hash)
        if not self.chain.in_best_chain(block):
            return _json({"in_best_chain": False})
        following = self.chain.chain[block.height + 1] if block.height + 1 < len(self.chain.chain) else None
        return _json({"in_best_chain": True, "height": block.height, "next_best": following})

    def _block_txids(self, block_hash: str) -> Reply:
        return _json(self.chain.block(block_hash).txids)

    def _block_txid(self, block_hash: str, index: str) -> Reply:
        txids = self.chain.block(block_hash).txids
        if int(index) >= len(txids):
            raise NotFoundError("Transaction not found")
        return _text(txids[int(index)])

    def _block_txs(self, block_hash: str, start: str | None) -> Reply:
        block = self.chain.block(block_hash)
        first = int(start or 0)
        if first % PAGE:
            return _text(f"start index must be a multipication of {PAGE}", 400)
        if first >= len(block.txs) and first:
            return _text("start index out of range", 400)
        return _json([tx_json(self.chain, tx) for tx in block.txs[first:first + PAGE]])

    def _block_header(self, block_hash: str) -> Reply:
        return _text(self.chain.block(block_hash).header.hex())

    def _block_raw(self, block_hash: str) -> Reply:
        from embit import compact

        block = self.chain.block(block_hash)
        raw = block.header + compact.to_bytes(len(block.txs)) + b"".join(tx.serialize() for tx in block.txs)
        return Reply(200, raw, "application/octet-stream")

    # -- transactions -------------------------------------------------------------------------

    def _tx(self, txid: str) -> Reply:
        return _json(tx_json(self.chain, self.chain.tx(txid)))

    def _tx_status(self, txid: str) -> Reply:
        self.chain.tx(txid)
        return _json(self.chain.tx_status(txid.lower()))

    def _tx_hex(self, txid: str) -> Reply:
        return _text(bytes(self.chain.tx(txid).serialize()).hex())

    def _tx_raw(self, txid: str) -> Reply:
        return Reply(200, bytes(self.chain.tx(txid).serialize()), "application/octet-stream")

    def _outspend_json(self, txid: str, vout: int) -> dict[str, Any]:
        spend = self.chain.outspend(txid, vout)
        if spend is None:
            return {"spent": False}
        return {"spent": True, "txid": spend[0], "vin": spend[1], "status": self.chain.tx_status(spend[0])}

    def _tx_outspend(self, txid: str, vout: str) -> Reply:
        tx = self.chain.tx(txid)
        if int(vout) >= len(tx.vout):
            raise NotFoundError("Output not found")
        return _json(self._outspend_json(txid.lower(), int(vout)))

    def _tx_outspends(self, txid: str) -> Reply:
        tx = self.chain.tx(txid)
        return _json([self._outspend_json(txid.lower(), n) for n in range(len(tx.vout))])

    # -- addresses ----------------------------------------------------------------------------

    def _script(self, kind: str, key: str) -> bytes:
        """The script an /address/:a or /scripthash/:h route is about (b"" for an unseen scripthash)."""
        if kind == "address":
            return regtest_script(key)
        if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
            raise ValueError(f"Invalid scripthash {key!r}")
        return self.chain.script_for_hash(key) or b""

    def _address(self, kind: str, address: str) -> Reply:
        script = self._script(kind, address)
        pool, confirmed = self.chain.address_txids(script)

        def stats(txids: list[str]) -> dict[str, int]:
            funded = spent = funded_sum = spent_sum = 0
            for txid in txids:
                tx = self.chain.txs[txid]
                for txout in tx.vout:
                    if bytes(txout.script_pubkey.data) == script:
                        funded += 1
                        funded_sum += txout.value
                if not is_coinbase(tx):
                    for txin in tx.vin:
                        prev = self.chain.prevout(txin)
                        if prev is not None and bytes(prev.script_pubkey.data) == script:
                            spent += 1
                            spent_sum += prev.value
            return {"funded_txo_count": funded, "funded_txo_sum": funded_sum, "spent_txo_count": spent,
                    "spent_txo_sum": spent_sum, "tx_count": len(txids)}

        key = "address" if kind == "address" else "scripthash"
        return _json({key: address, "chain_stats": stats(confirmed), "mempool_stats": stats(pool)})

    def _address_txs(self, kind: str, address: str) -> Reply:
        pool, confirmed = self.chain.address_txids(self._script(kind, address))
        txids = pool[:MEMPOOL_PAGE] + confirmed[:PAGE]
        return _json([tx_json(self.chain, self.chain.txs[t]) for t in txids])

    def _address_txs_chain(self, kind: str, address: str, last_txid: str | None) -> Reply:
        _, confirmed = self.chain.address_txids(self._script(kind, address))
        start = 0
        if last_txid is not None:
            try:
                start = confirmed.index(last_txid.lower()) + 1
            except ValueError:
                return _json([])
        return _json([tx_json(self.chain, self.chain.txs[t]) for t in confirmed[start:start + PAGE]])

    def _address_txs_mempool(self, kind: str, address: str) -> Reply:
        pool, _ = self.chain.address_txids(self._script(kind, address))
        return _json([tx_json(self.chain, self.chain.txs[t]) for t in pool[:MEMPOOL_PAGE]])

    def _address_utxo(self, kind: str, address: str) -> Reply:
        utxos = self.chain.address_utxos(self._script(kind, address))
        return _json([{"txid": t, "vout": v, "status": self.chain.tx_status(t), "value": u.value_sat}
                      for t, v, u in utxos])

    def _mempool_txids(self) -> Reply:
        return _json(list(self.chain.mempool))

    def _info(self) -> Reply:
        return _json({"network": "regtest", "faucet_address": self.chain.faucet_address,
                      "tip_height": self.chain.tip().height, "mempool_size": len(self.chain.mempool)})

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._http.start()
        if self._block_time_s:
            self._miner = PeriodicMiner(lambda: self.chain.mine(1), self._block_time_s, "btc-miner")
            self._miner.start()

    def stop(self) -> None:
        if self._miner is not None:
            self._miner.stop()
        self._http.stop()


def _int_arg(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


__all__ = ["EsploraServer", "block_json", "serialize_no_witness", "tx_json"]
