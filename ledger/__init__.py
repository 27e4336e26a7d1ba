"""The ledger: PostgreSQL book of record for balances, orders, trades, deposits and withdrawals.

Public entry points: `ledger.deposits` (credit/reverse, for the watchers), `ledger.demo`
(demo assets and markets), `ledger.arithmetic` (pure balance arithmetic),
`ledger.intake_protocol` (the API -> ledger stream contract), the consumers and the audit.
"""
