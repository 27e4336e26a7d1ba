-- ledger_refuse(sqlstate, message): raises, so a condition inside one statement can refuse the
-- whole statement (every data-modifying CTE with it) when the statement runs on its own,
-- outside a transaction block, where a check made after it would come too late to roll it back.
-- Used as `CASE WHEN cond THEN x ELSE ledger_refuse(...) END` (CASE fixes the order of evaluation).
-- SQLSTATEs in class CF: CF001 a guarded balance would go below zero, CF002 an offset moved.
CREATE FUNCTION ledger_refuse(code text, message text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
END
$$;
