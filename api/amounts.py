"""Decimal strings at the API edge: strict parsing into exact integers, and formatting back.

Pure, no I/O, no float and no `Decimal` arithmetic: a decimal string is read as an integer
mantissa and a scale (`"12.340"` is 12340 at scale 3) and every conversion is exact integer
arithmetic. A conversion that would lose a digit is refused with a `ValidationError` naming
the field and the reason (too many decimals, not a multiple of the tick or lot, zero,
negative, not a number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from api.errors import ValidationError

_DECIMAL = re.compile(r"^(\d{1,30})(?:\.(\d{1,30}))?$")


@dataclass(frozen=True, slots=True)
class Dec:
    """A non-negative decimal number: `mantissa / 10**scale`."""

    mantissa: int
    scale: int

    def __str__(self) -> str:
        return format_units(self.mantissa, self.scale)


def parse_decimal(field: str, raw: object) -> Dec:
    """A decimal string like `"0.015"` (no sign, no exponent); JSON numbers are refused
    because floats cannot carry exact amounts."""
    if raw is None:
        raise ValidationError("is required", field=field)
    if isinstance(raw, bool) or not isinstance(raw, str):
        raise ValidationError(
            f"must be a decimal string such as \"0.015\", not a JSON {type(raw).__name__}", field=field
        )
    text = raw.strip()
    if text.startswith("-"):
        raise ValidationError(f"must be positive, got {raw!r}", field=field)
    match = _DECIMAL.match(text)
    if match is None:
        raise ValidationError(f"is not a decimal number: {raw[:40]!r}", field=field)
    whole, frac = match.group(1), match.group(2) or ""
    return Dec(int(whole + frac), len(frac))


def parse_positive(field: str, raw: object) -> Dec:
    value = parse_decimal(field, raw)
    if value.mantissa == 0:
        raise ValidationError("must be greater than zero", field=field)
    return value


def to_units(field: str, value: Dec, decimals: int) -> int:
    """`value` in units of 10**-decimals; more decimals than that is an error."""
    if value.scale <= decimals:
        return value.mantissa * int(10 ** (decimals - value.scale))
    step = int(10 ** (value.scale - decimals))
    if value.mantissa % step:
        raise ValidationError(f"has too many decimals: at most {decimals} allowed", field=field)
    return value.mantissa // step


def to_steps(field: str, value: Dec, step: Dec, step_name: str) -> int:
    """How many `step`s make `value` exactly (price in ticks, quantity in lots)."""
    scale = max(value.scale, step.scale)
    v = value.mantissa * int(10 ** (scale - value.scale))
    s = step.mantissa * int(10 ** (scale - step.scale))
    if s <= 0:
        raise ValidationError(f"market has a zero {step_name}", field=field)
    if v % s:
        raise ValidationError(f"must be a multiple of the {step_name} {step}", field=field)
    return v // s


def format_units(units: int, decimals: int) -> str:
    """Integer `units` of 10**-decimals as a decimal string with exactly `decimals` digits."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    if decimals == 0:
        return f"{sign}{units}"
    whole, frac = divmod(units, int(10**decimals))
    return f"{sign}{whole}.{frac:0{decimals}d}"


def format_steps(steps: int, step: Dec) -> str:
    """`steps` times `step` as a decimal string at the step's scale (a price from ticks)."""
    return format_units(steps * step.mantissa, step.scale)
