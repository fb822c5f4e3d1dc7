"""Field checks shared by every config dataclass: each error names the field (as a sweep YAML spells it)."""

from __future__ import annotations

import math


def check_choice(field_name: str, value: object, allowed: tuple) -> None:
    """Raise a ValueError naming the field and the allowed values."""
    if value not in allowed:
        raise ValueError(f"{field_name}={value!r} is not allowed; choose one of {list(allowed)}")


def is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_int(field_name: str, value: object, minimum: int) -> None:
    """Raise unless ``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field_name}={value!r} must be an integer >= {minimum}")


def check_positive(field_name: str, value: object) -> None:
    """Raise unless ``value`` is a finite number ``> 0``."""
    if not (is_number(value) and value > 0):
        raise ValueError(f"{field_name}={value!r} must be a finite number > 0")
