"""The arithmetic of converted reports in SQL (reports/conversion.py, docs/reports.md): a
division to 28 significant digits and a rounding half-even, both exact in ``numeric``.

PostgreSQL's own division keeps as many digits as its operands suggest, and its round() takes
halves away from zero; these two give what Python's ``Context(prec=28).divide`` and
``ROUND_HALF_EVEN`` give, so that a report converted in one statement is the documented one.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "reports"


def upgrade() -> None:
    # Integer division of the dividend shifted to a 28-digit quotient, then the remainder
    # decides the last digit: above half up, exactly half to the even digit.
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.divide_28(dividend numeric, divisor numeric) RETURNS numeric
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
        DECLARE
          -- A first guess only (numeric's log() costs ten times the rest), that the integer
          -- division below corrects: no amount is ever a float.
          shift int := 27 - floor(log(dividend::float8 / divisor::float8))::int;
          scaled numeric;
          quotient numeric;
          twice_remainder numeric;
        BEGIN
          IF dividend <= 0 OR divisor <= 0 THEN
            RAISE EXCEPTION 'divide_28 takes positive numbers, not % and %', dividend, divisor;
          END IF;
          LOOP  -- the guess may be one off near a power of ten
            scaled := dividend * ('1e' || shift)::numeric;
            quotient := div(scaled, divisor);
            EXIT WHEN quotient >= 1e27 AND quotient < 1e28;
            shift := shift + CASE WHEN quotient >= 1e28 THEN -1 ELSE 1 END;
          END LOOP;
          twice_remainder := 2 * (scaled - quotient * divisor);
          IF twice_remainder > divisor OR twice_remainder = divisor AND mod(quotient, 2) = 1 THEN
            quotient := quotient + 1;
          END IF;
          RETURN quotient * ('1e' || -shift)::numeric;
        END $$
        """
    )
    # A plain SQL expression, and not STRICT (its CASE is not), so that the planner inlines it
    # into each row's arithmetic instead of calling a function per row (9 µs, 0.5 inlined).
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.round_half_even(value numeric) RETURNS numeric
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
          SELECT round(value) - CASE WHEN abs(value - trunc(value)) = 0.5
                                      AND mod(round(value), 2) <> 0
                                     THEN sign(value) ELSE 0 END
        $$
        """
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SCHEMA}.round_half_even(numeric)")
    op.execute(f"DROP FUNCTION {SCHEMA}.divide_28(numeric, numeric)")
