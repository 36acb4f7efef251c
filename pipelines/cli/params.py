"""Click parameter types for numbers that must be finite: click's FloatRange lets `nan` through
(every comparison with NaN is false) and `inf` through any range without an upper end."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """A float in [min, max] (ends open where asked) that is never NaN or infinite."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        number = super().convert(value, param, ctx)
        if number is not None and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
