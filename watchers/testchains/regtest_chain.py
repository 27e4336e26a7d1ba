"""The in-memory Bitcoin regtest chain behind the Esplora-compatible test server.

Owns blocks (80-byte headers with previous hash, merkle root, regtest proof of work), coinbase
outputs (BIP34 height, BIP141 witness commitment), the UTXO set, a mempool that accepts only
transactions whose inputs exist unspent and whose P2WPKH / P2TR key-path signatures verify
(btc_verify), full-RBF replacement of mempool conflicts that pay more, a faucet key paying
with real signed P2WPKH transactions, and reorgs that replace the last k blocks. State lives
in process memory only (a restart is a new chain). Every public method takes the lock;
rendering to Esplora JSON is esplora_regtest's job.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from watchers.testchains.btc_verify import verify_input
from watchers.testchains.errors import NotFoundError, TxRejectedError

COIN_SAT = 100_000_000
MAX_MONEY_SAT = 21_000_000 * COIN_SAT
COINBASE_MATURITY = 100
HALVING_INTERVAL = 150  # regtest
REGTEST_BITS = 0x207FFFFF
REGTEST_TARGET = 0x7FFFFF << (8 * (0x20 - 3))
# Bitcoin's regtest genesis block (chainparams.cpp): the mainnet genesis coinbase with regtest
# time, nonce and bits. We rebuild it byte for byte so clients that pin the genesis (BDK) agree.
GENESIS_TIME = 1296688602
GENESIS_NONCE = 2
GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
GENESIS_COINBASE_HEX = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d"
    "0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66"
    "207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe55"
    "48271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba"
    "0b8d578a4c702b6bf11d5fac00000000"
)
NULL_TXID = b"\x00" * 32
WITNESS_MAGIC = bytes.fromhex("aa21a9ed")
# The faucet's key is public test data: sha256 of a fixed label. Never use it for value.
FAUCET_SECRET = hashlib.sha256(b"coffer regtest faucet").digest()
FAUCET_FEE_RATE_SAT_VB = 2
MIN_RELAY_FEE_SAT_VB = 1


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def merkle_root(hashes: list[bytes]) -> bytes:
    """Bitcoin merkle root over internal-byte-order hashes (last one doubled on odd levels)."""
    if not hashes:
        return NULL_TXID
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def serialize_no_witness(tx: Any) -> bytes:
    from embit import compact

    out = io.BytesIO()
    out.write(tx.version.to_bytes(4, "little"))
    out.write(compact.to_bytes(len(tx.vin)))
    for txin in tx.vin:
        out.write(txin.serialize())
    out.write(compact.to_bytes(len(tx.vout)))
    for txout in tx.vout:
        out.write(txout.serialize())
    out.write(tx.locktime.to_bytes(4, "little"))
    return out.getvalue()


def tx_weight(tx: Any) -> int:
    return 3 * len(serialize_no_witness(tx)) + len(tx.serialize())


def is_coinbase(tx: Any) -> bool:
    return len(tx.vin) == 1 and bytes(tx.vin[0].txid) == NULL_TXID and tx.vin[0].vout == 0xFFFFFFFF


def subsidy_sat(height: int) -> int:
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * COIN_SAT) >> halvings


@dataclass(slots=True)
class Block:
    """One block; `hash` and txids in display (reversed) hex, as Esplora shows them."""

    hash: str
    height: int
    version: int
    prev_hash: str
    merkle_root: str
    time: int
    bits: int
    nonce: int
    header: bytes
    txs: list[Any]
    txids: list[str]
    size: int
    weight: int


@dataclass(frozen=True, slots=True)
class Utxo:
    value_sat: int
    script: bytes
    height: int | None  # None: an unconfirmed (mempool) output
    coinbase: bool


@dataclass(slots=True)
class _State:
    """What the best chain implies; rebuilt from the blocks after a reorg."""

    utxos: dict[tuple[str, int], Utxo] = field(default_factory=dict)
    spent_by: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    tx_block: dict[str, tuple[str, int]] = field(default_factory=dict)  # txid -> (block hash, index)
    script_txs: dict[bytes, list[str]] = field(default_factory=dict)  # script -> txids, chain order


def regtest_script(address: str) -> bytes:
    """The scriptPubKey of a regtest address; TxRejectedError-free: raises ValueError if invalid."""
    from embit.networks import NETWORKS
    from embit.script import Script, address_to_scriptpubkey

    try:
        script = address_to_scriptpubkey(address)
        again = Script(script.data).address(NETWORKS["regtest"])
    except Exception:
        raise ValueError(f"invalid address {address!r}") from None
    if again.lower() != address.lower():
        raise ValueError(f"{address!r} is not a regtest address")
    return bytes(script.data)


@lru_cache(maxsize=65536)
def script_address(script: bytes) -> str | None:
    """The regtest address of a scriptPubKey, or None (cached: bech32 in Python is slow)."""
    from embit.networks import NETWORKS
    from embit.script import Script

    try:
        return str(Script(script).address(NETWORKS["regtest"]))
    except Exception:
        return None


class RegtestChain:
    """A Bitcoin regtest chain in memory. Thread-safe (one lock)."""

    def __init__(self) -> None:
        from coincurve import PrivateKey

        self._lock = threading.RLock()
        self._faucet_key = PrivateKey(FAUCET_SECRET)
        self.faucet_pubkey = self._faucet_key.public_key.format(compressed=True)
        from watchers.testchains.btc_verify import hash160

        self.faucet_script = b"\x00\x14" + hash160(self.faucet_pubkey)
        self.faucet_address = str(script_address(self.faucet_script))
        self.blocks: dict[str, Block] = {}  # every block ever mined, orphans included
        self.chain: list[str] = []  # best chain, by height
        self.txs: dict[str, Any] = {}  # every transaction ever seen
        self.mempool: dict[str, Any] = {}
        self.mempool_time: dict[str, int] = {}
        self.state = _State()
        self.scripts_by_hash: dict[str, bytes] = {}  # sha256(script) hex (both byte orders) -> script
        self._extra_nonce = 0
        self._add_genesis()

    # -- queries ------------------------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def tip(self) -> Block:
        return self.blocks[self.chain[-1]]

    def block(self, block_hash: str) -> Block:
        found = self.blocks.get(block_hash.lower())
        if found is None:
            raise NotFoundError("Block not found")
        return found

    def in_best_chain(self, block: Block) -> bool:
        return block.height < len(self.chain) and self.chain[block.height] == block.hash

    def tx(self, txid: str) -> Any:
        txid = txid.lower()
        if txid in self.mempool or txid in self.state.tx_block:
            return self.txs[txid]
        raise NotFoundError("Transaction not found")

    def tx_status(self, txid: str) -> dict[str, Any]:
        where = self.state.tx_block.get(txid)
        if where is None:
            return {"confirmed": False}
        block = self.blocks[where[0]]
        return {"confirmed": True, "block_height": block.height, "block_hash": block.hash, "block_time": block.time}

    def prevout(self, txin: Any) -> Any:
        """The TxOut an input spends (from any known transaction), or None."""
        funding = self.txs.get(bytes(txin.txid).hex())
        if funding is None or txin.vout >= len(funding.vout):
            return None
        return funding.vout[txin.vout]

    def fee_sat(self, tx: Any) -> int:
        if is_coinbase(tx):
            return 0
        total_in = 0
        for txin in tx.vin:
            prev = self.prevout(txin)
            total_in += int(prev.value) if prev is not None else 0
        return total_in - sum(int(o.value) for o in tx.vout)

    def address_txids(self, script: bytes) -> tuple[list[str], list[str]]:
        """(mempool txids newest first, confirmed txids newest first) touching `script`."""
        confirmed = list(reversed(self.state.script_txs.get(script, [])))
        pool = [txid for txid in reversed(self.mempool) if script in self._scripts_of(self.mempool[txid])]
        return pool, confirmed

    def address_utxos(self, script: bytes) -> list[tuple[str, int, Utxo]]:
        pool_spends = self._mempool_spends()
        out = [(t, v, u) for (t, v), u in self.state.utxos.items()
               if u.script == script and (t, v) not in pool_spends]
        for txid, tx in self.mempool.items():
            for vout, txout in enumerate(tx.vout):
                if bytes(txout.script_pubkey.data) == script and (txid, vout) not in pool_spends:
                    out.append((txid, vout, Utxo(txout.value, script, None, False)))
        return out

    def outspend(self, txid: str, vout: int) -> tuple[str, int] | None:
        return self.state.spent_by.get((txid, vout)) or self._mempool_spends().get((txid, vout))

    def _scripts_of(self, tx: Any) -> set[bytes]:
        scripts = {bytes(o.script_pubkey.data) for o in tx.vout}
        if not is_coinbase(tx):
            for txin in tx.vin:
                prev = self.prevout(txin)
                if prev is not None:
                    scripts.add(bytes(prev.script_pubkey.data))
        return scripts

    def _mempool_spends(self) -> dict[tuple[str, int], tuple[str, int]]:
        spends: dict[tuple[str, int], tuple[str, int]] = {}
        for txid, tx in self.mempool.items():
            for n, txin in enumerate(tx.vin):
                spends[(bytes(txin.txid).hex(), txin.vout)] = (txid, n)
        return spends

    # -- mempool acceptance -------------------------------------------------------------------

    def submit_hex(self, tx_hex: str) -> str:
        """POST /tx: parse, validate and add to the mempool; returns the txid."""
        from embit.transaction import Transaction

        try:
            raw = bytes.fromhex(tx_hex.strip())
            tx = Transaction.parse(raw)
            if tx.serialize() != raw:
                raise ValueError("trailing or non-canonical bytes")
        except Exception:
            raise TxRejectedError('sendrawtransaction RPC error: {"code":-22,"message":"TX decode failed"}') from None
        with self._lock:
            return self.accept(tx)

    def accept(self, tx: Any) -> str:
        """Validate `tx` against the best chain plus mempool; add it; return its txid."""
        txid = bytes(tx.txid()).hex()
        try:
            evicted = self._check(tx, txid)
        except TxRejectedError as exc:
            message = str(exc)
            if message.startswith("sendrawtransaction"):
                raise
            code = -25 if "missingorspent" in message or "premature" in message else -26
            raise TxRejectedError(
                f'sendrawtransaction RPC error: {{"code":{code},"message":"{message}"}}') from None
        for old in evicted:
            self.mempool.pop(old, None)
            self.mempool_time.pop(old, None)
        self.txs[txid] = tx
        self.mempool[txid] = tx
        self.mempool_time[txid] = int(time.time())
        self._index_scripts(tx)
        return txid

    def _index_scripts(self, tx: Any) -> None:
        for txout in tx.vout:
            script = bytes(txout.script_pubkey.data)
            digest = hashlib.sha256(script).digest()
            self.scripts_by_hash[digest.hex()] = script
            self.scripts_by_hash[digest[::-1].hex()] = script

    def script_for_hash(self, scripthash: str) -> bytes | None:
        """The script whose sha256 is `scripthash` (Esplora /scripthash/ routes), if ever paid to."""
        return self.scripts_by_hash.get(scripthash.lower())

    def _check(self, tx: Any, txid: str) -> list[str]:
        """Validate `tx`; returns the mempool txids it replaces (full RBF), usually none."""
        if txid in self.state.tx_block:
            raise TxRejectedError(
                'sendrawtransaction RPC error: {"code":-27,"message":"Transaction already in block chain"}')
        if txid in self.mempool:
            raise TxRejectedError("txn-already-in-mempool")
        if not tx.vin:
            raise TxRejectedError("bad-txns-vin-empty")
        if not tx.vout:
            raise TxRejectedError("bad-txns-vout-empty")
        if is_coinbase(tx):
            raise TxRejectedError("coinbase")
        outpoints = [(bytes(i.txid).hex(), i.vout) for i in tx.vin]
        if len(set(outpoints)) != len(outpoints):
            raise TxRejectedError("bad-txns-inputs-duplicate")
        total_out = 0
        for txout in tx.vout:
            if txout.value < 0 or txout.value > MAX_MONEY_SAT:
                raise TxRejectedError("bad-txns-vout-toolarge")
            total_out += txout.value
        if total_out > MAX_MONEY_SAT:
            raise TxRejectedError("bad-txns-txouttotal-toolarge")
        pool_spends = self._mempool_spends()
        conflicts = {pool_spends[o][0] for o in outpoints if o in pool_spends}
        evicted = self._with_descendants(conflicts)
        next_height = len(self.chain)
        scripts: list[bytes] = []
        values: list[int] = []
        for outpoint in outpoints:
            if outpoint[0] in evicted:
                raise TxRejectedError("bad-txns-spends-conflicting-tx")
            utxo = self.state.utxos.get(outpoint)
            if utxo is None:
                parent = self.mempool.get(outpoint[0])
                if parent is None or outpoint[1] >= len(parent.vout):
                    raise TxRejectedError("bad-txns-inputs-missingorspent")
                txout = parent.vout[outpoint[1]]
                utxo = Utxo(txout.value, bytes(txout.script_pubkey.data), None, False)
            if utxo.coinbase and utxo.height is not None and next_height - utxo.height < COINBASE_MATURITY:
                raise TxRejectedError("bad-txns-premature-spend-of-coinbase")
            scripts.append(utxo.script)
            values.append(utxo.value_sat)
        if sum(values) < total_out:
            raise TxRejectedError("bad-txns-in-belowout")
        for index in range(len(tx.vin)):
            verify_input(tx, index, scripts, values)
        if evicted:
            self._check_replacement(tx, sum(values) - total_out, conflicts, evicted)
        return sorted(evicted)

    def _with_descendants(self, txids: set[str]) -> set[str]:
        """`txids` plus every mempool transaction spending their outputs, transitively."""
        found = set(txids)
        for child_txid, child in self.mempool.items():  # the mempool is in acceptance order
            if any(bytes(i.txid).hex() in found for i in child.vin):
                found.add(child_txid)
        return found

    def _check_replacement(self, tx: Any, fee_sat: int, conflicts: set[str], evicted: set[str]) -> None:
        """Full-RBF (Bitcoin Core 28 default), BIP125 rules 3 and 4 and the feerate rule."""
        vsize = -(-tx_weight(tx) // 4)
        old_fees = sum(self.fee_sat(self.mempool[t]) for t in evicted)
        if fee_sat < old_fees + vsize * MIN_RELAY_FEE_SAT_VB:
            raise TxRejectedError(f"insufficient fee, rejecting replacement {bytes(tx.txid()).hex()}, "
                                  f"not enough additional fees to relay; {fee_sat} < {old_fees} + {vsize}")
        for old in conflicts:
            old_tx = self.mempool[old]
            if fee_sat * tx_weight(old_tx) <= self.fee_sat(old_tx) * tx_weight(tx):
                raise TxRejectedError(f"insufficient fee, rejecting replacement {bytes(tx.txid()).hex()}; "
                                      f"new feerate <= old feerate of {old}")

    # -- mining -------------------------------------------------------------------------------

    def mine(self, blocks: int, script: bytes | None = None) -> list[str]:
        """Mine `blocks` blocks paying `script` (default: the faucet); the first takes the mempool."""
        if blocks < 0:
            raise ValueError("blocks must be >= 0")
        with self._lock:
            hashes = []
            for _ in range(blocks):
                txs = list(self.mempool.values())
                self.mempool.clear()
                self.mempool_time.clear()
                hashes.append(self._mine_block(txs, script or self.faucet_script).hash)
            return hashes

    def _coinbase(self, height: int, script: bytes, fees_sat: int, witness_root: bytes | None) -> Any:
        from embit.script import Script, Witness
        from embit.transaction import Transaction, TransactionInput, TransactionOutput

        self._extra_nonce += 1
        height_bytes = height.to_bytes((height.bit_length() + 8) // 8, "little") if height else b"\x00"
        script_sig = bytes([len(height_bytes)]) + height_bytes + b"\x08" + self._extra_nonce.to_bytes(8, "little")
        vout = [TransactionOutput(subsidy_sat(height) + fees_sat, Script(script))]
        witness = None
        if witness_root is not None:  # BIP141 commitment with a zero reserved value
            commitment = sha256d(witness_root + b"\x00" * 32)
            vout.append(TransactionOutput(0, Script(b"\x6a\x24" + WITNESS_MAGIC + commitment)))
            witness = Witness([b"\x00" * 32])
        txin = TransactionInput(NULL_TXID, 0xFFFFFFFF, Script(script_sig), 0xFFFFFFFF, witness)
        return Transaction(version=2, vin=[txin], vout=vout, locktime=0)

    def _add_genesis(self) -> None:
        from embit.transaction import Transaction

        coinbase = Transaction.parse(bytes.fromhex(GENESIS_COINBASE_HEX))
        root = merkle_root([bytes(coinbase.hash())])
        header = (1).to_bytes(4, "little") + NULL_TXID + root + GENESIS_TIME.to_bytes(4, "little") + \
            REGTEST_BITS.to_bytes(4, "little") + GENESIS_NONCE.to_bytes(4, "little")
        block_hash = sha256d(header)[::-1].hex()
        if block_hash != GENESIS_HASH:  # our header/merkle code disagrees with Bitcoin's: refuse to run
            raise RuntimeError(f"regtest genesis hash mismatch: {block_hash}")
        size = 80 + 1 + len(coinbase.serialize())
        block = Block(hash=block_hash, height=0, version=1, prev_hash="0" * 64, merkle_root=root[::-1].hex(),
                      time=GENESIS_TIME, bits=REGTEST_BITS, nonce=GENESIS_NONCE, header=header, txs=[coinbase],
                      txids=[bytes(coinbase.txid()).hex()], size=size, weight=4 * size)
        self.blocks[block.hash] = block
        self.chain.append(block.hash)
        self._connect(block)

    def _mine_block(self, txs: list[Any], script: bytes) -> Block:
        height = len(self.chain)
        prev = self.blocks[self.chain[-1]] if self.chain else None
        fees = sum(self.fee_sat(tx) for tx in txs)
        segwit = any(tx.is_segwit for tx in txs)
        witness_root = None
        if segwit:
            witness_root = merkle_root([NULL_TXID] + [sha256d(tx.serialize()) for tx in txs])
        coinbase = self._coinbase(height, script, fees, witness_root)
        all_txs = [coinbase, *txs]
        root = merkle_root([bytes(tx.hash()) for tx in all_txs])
        block_time = max(int(time.time()), prev.time + 1) if prev else GENESIS_TIME
        prev_internal = bytes.fromhex(prev.hash)[::-1] if prev else NULL_TXID
        version = 0x20000000
        base = version.to_bytes(4, "little") + prev_internal + root + block_time.to_bytes(4, "little") + \
            REGTEST_BITS.to_bytes(4, "little")
        nonce = 0
        while True:  # regtest proof of work: about one try in two suffices
            header = base + nonce.to_bytes(4, "little")
            digest = sha256d(header)
            if int.from_bytes(digest, "little") <= REGTEST_TARGET:
                break
            nonce += 1
        from embit import compact

        body = b"".join(tx.serialize() for tx in all_txs)
        size = 80 + len(compact.to_bytes(len(all_txs))) + len(body)
        weight = 4 * (80 + len(compact.to_bytes(len(all_txs)))) + sum(tx_weight(tx) for tx in all_txs)
        block = Block(
            hash=digest[::-1].hex(), height=height, version=version, prev_hash=prev.hash if prev else "0" * 64,
            merkle_root=root[::-1].hex(), time=block_time, bits=REGTEST_BITS, nonce=nonce, header=header,
            txs=all_txs, txids=[bytes(tx.txid()).hex() for tx in all_txs], size=size, weight=weight,
        )
        self.blocks[block.hash] = block
        self.chain.append(block.hash)
        self._connect(block)
        return block

    def _connect(self, block: Block) -> None:
        state = self.state
        for index, (txid, tx) in enumerate(zip(block.txids, block.txs, strict=True)):
            self.txs[txid] = tx
            self._index_scripts(tx)
            state.tx_block[txid] = (block.hash, index)
            touched: set[bytes] = set()
            if not is_coinbase(tx):
                for n, txin in enumerate(tx.vin):
                    outpoint = (bytes(txin.txid).hex(), txin.vout)
                    spent = state.utxos.pop(outpoint, None)
                    if spent is not None:
                        touched.add(spent.script)
                    state.spent_by[outpoint] = (txid, n)
            coinbase = is_coinbase(tx)
            for vout, txout in enumerate(tx.vout):
                script = bytes(txout.script_pubkey.data)
                touched.add(script)
                # OP_RETURN outputs are unspendable, and so is the genesis coinbase (as in Bitcoin).
                if script[:1] != b"\x6a" and block.height > 0:
                    state.utxos[(txid, vout)] = Utxo(txout.value, script, block.height, coinbase)
            for script in touched:
                state.script_txs.setdefault(script, []).append(txid)

    # -- reorgs -------------------------------------------------------------------------------

    def reorg(self, depth: int, new_blocks: int, drop_txids: Iterable[str] = (),
              script: bytes | None = None) -> list[str]:
        """Replace the last `depth` blocks with `new_blocks` new ones.

        Transactions of the orphaned blocks go back to the mempool ahead of what was there
        (as on a real node), except those in `drop_txids` and any that no longer validate
        (e.g. children of a dropped one); the first new block takes the mempool.
        """
        drop = {t.lower() for t in drop_txids}
        with self._lock:
            if depth < 1 or depth >= len(self.chain):
                raise ValueError(f"reorg depth must be in 1..{len(self.chain) - 1}")
            if new_blocks < 1:
                raise ValueError("a reorg must mine at least one new block")
            orphaned = [self.blocks[h] for h in self.chain[-depth:]]
            del self.chain[-depth:]
            self.state = _State()
            for block_hash in self.chain:
                self._connect(self.blocks[block_hash])
            candidates = [tx for block in orphaned for tx in block.txs[1:]] + list(self.mempool.values())
            self.mempool.clear()
            self.mempool_time.clear()
            for tx in candidates:
                if bytes(tx.txid()).hex() in drop:
                    continue
                try:
                    self.accept(tx)
                except TxRejectedError:
                    continue  # no longer valid on the new chain: gone, as on a node
            return self.mine(new_blocks, script)

    # -- faucet -------------------------------------------------------------------------------

    def faucet(self, address: str, amount_sat: int) -> str:
        """Pay `address` from the faucet key with a signed P2WPKH transaction into the mempool."""
        from embit.script import Script, Witness
        from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

        if amount_sat <= 0:
            raise ValueError("amount_sat must be positive")
        script = regtest_script(address)
        with self._lock:
            next_height = len(self.chain)
            spendable = [
                (txid, vout, u) for txid, vout, u in self.address_utxos(self.faucet_script)
                if not (u.coinbase and u.height is not None and next_height - u.height < COINBASE_MATURITY)
            ]
            spendable.sort(key=lambda item: (item[2].height is None, item[2].height or 0, item[0], item[1]))
            chosen: list[tuple[str, int, Utxo]] = []
            total = 0
            for item in spendable:
                chosen.append(item)
                total += item[2].value_sat
                fee = FAUCET_FEE_RATE_SAT_VB * (11 + 68 * len(chosen) + 31 * 2)
                if total >= amount_sat + fee:
                    break
            else:
                raise ValueError(f"faucet has {total} sat spendable, cannot pay {amount_sat} sat; mine more blocks")
            change = total - amount_sat - fee
            vout = [TransactionOutput(amount_sat, Script(script))]
            if change >= 546:
                vout.append(TransactionOutput(change, Script(self.faucet_script)))
            vin = [TransactionInput(bytes.fromhex(txid), n, sequence=0xFFFFFFFD) for txid, n, _ in chosen]
            tx = Transaction(version=2, vin=vin, vout=vout, locktime=0)
            script_code = Script(b"\x76\xa9\x14" + self.faucet_script[2:] + b"\x88\xac")
            for index, (_, _, utxo) in enumerate(chosen):
                msg = tx.sighash_segwit(index, script_code, utxo.value_sat, SIGHASH.ALL)
                der = self._faucet_key.sign(msg, hasher=None)
                tx.vin[index].witness = Witness([der + bytes([SIGHASH.ALL]), self.faucet_pubkey])
            return self.accept(tx)
