-- API keys of the trading API (api/keystore.py). The secret is needed to verify HMACs, so it
-- is stored encrypted (AES-256-GCM under the API master key, key id as associated data),
-- never in clear and never hashed.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    user_id     bigint NOT NULL,
    secret_enc  bytea NOT NULL,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz NULL
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);
