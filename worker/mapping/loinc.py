"""LOINC code syntax: NNNNN-C, where C is a mod-10 (Luhn) check digit over the digits before the dash."""

from __future__ import annotations

import re

CODE_PATTERN = re.compile(r"^(\d{1,7})-(\d)$")


def check_digit(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # rightmost digit and every second one to its left are doubled
            value *= 2
            value = value - 9 if value > 9 else value
        total += value
    return (10 - total % 10) % 10


def is_valid_code(code: str) -> bool:
    match = CODE_PATTERN.match(code or "")
    return bool(match) and check_digit(match.group(1)) == int(match.group(2))
