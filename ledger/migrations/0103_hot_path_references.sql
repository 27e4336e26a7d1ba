-- The two tables written once per order and once per engine command no longer carry foreign
-- keys: each FK costs a trigger and an index probe per inserted row (measured: about a quarter
-- of the intake's COPY of orders, and most of the settled_commands insert). The writers check
-- the references before writing (the intake locks the user's row set and knows the enabled
-- markets; settlement writes only its own market), and `coffer ledger audit` checks them
-- (check "references"): an order of an unknown user or market, or a settled command of an
-- unknown market, is a difference.
ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey;
ALTER TABLE orders DROP CONSTRAINT orders_market_fkey;
ALTER TABLE settled_commands DROP CONSTRAINT settled_commands_market_fkey;
