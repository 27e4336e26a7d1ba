-- wallet: account xpubs with their next free index, and per-user deposit addresses.
--
-- wallet_accounts: one row per (chain, network, address type, account xpub); `next_index`
-- is the allocation counter, locked FOR UPDATE by the allocator so concurrent requests
-- get distinct, gap-free indices.
CREATE TABLE wallet_accounts (
    account text PRIMARY KEY,            -- stable id: chain:network:type:fingerprint of the xpub
    chain text NOT NULL CHECK (chain IN ('btc', 'eth')),
    network text NOT NULL,
    addr_type text NOT NULL,             -- p2wpkh | p2tr | eth
    xpub text NOT NULL,
    next_index integer NOT NULL DEFAULT 0 CHECK (next_index >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- deposit_addresses: the columns agreed with the ledger and watchers come first.
-- `account` (NULL allowed for rows inserted by other packages' tests) ties a row to its xpub;
-- `created_xid` lets AddressBook.refresh never miss a row whose transaction committed late.
CREATE TABLE deposit_addresses (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL,
    asset text NOT NULL,
    chain text NOT NULL,
    network text NOT NULL,
    address text NOT NULL,
    derivation_path text NOT NULL,
    address_index integer NOT NULL CHECK (address_index >= 0),
    is_current boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    account text NULL REFERENCES wallet_accounts (account),
    created_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT deposit_addresses_address_key UNIQUE (chain, network, address),
    CONSTRAINT deposit_addresses_index_key UNIQUE (account, address_index)
);

-- One current address per user and account (ETH and its ERC-20 tokens share an account).
CREATE UNIQUE INDEX deposit_addresses_current ON deposit_addresses (user_id, account) WHERE is_current;
CREATE INDEX deposit_addresses_user ON deposit_addresses (user_id);
CREATE INDEX deposit_addresses_chain_xid ON deposit_addresses (chain, network, created_xid);
-- Ethereum addresses are stored EIP-55 checksummed and matched case-insensitively, so an
-- address may not appear twice in another letter case either.
CREATE UNIQUE INDEX deposit_addresses_address_ci ON deposit_addresses (chain, network, lower(address));
CREATE INDEX deposit_addresses_lower ON deposit_addresses (lower(address));

-- The ledger's users table (migration 0100) comes first in the global order.
ALTER TABLE deposit_addresses
    ADD CONSTRAINT deposit_addresses_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
