"""Names people give things (organisations, pools, images) and the places they end up in:
libvirt domain titles, ``.vv`` files, download file names, CSV cells.

A name is one printable line. New names are refused otherwise (``validate_printable``, a
model field validator, so the API, the portal and Django admin all refuse them); wherever a
name is written into something line-based, ``single_line`` makes it safe whatever it holds
(names saved before the rule, values operators set).
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

# Control and format characters, surrogates, and line and paragraph separators: CR, LF and
# tab among them. libvirt refuses a domain title with a newline, XML cannot carry most C0
# controls, and a line break inside a key file's value starts a line (a key) of its own.
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_unprintable(char: str) -> bool:
    return unicodedata.category(char) in UNPRINTABLE_CATEGORIES


def validate_printable(value: str) -> None:
    """Model field validator: a name is one line of printable characters."""
    found = sorted({char for char in value if is_unprintable(char)})
    if found:
        raise ValidationError(
            "Use printable characters only: no line breaks, tabs or other control "
            "characters (found %(found)s).",
            code="unprintable", params={"found": ", ".join(f"U+{ord(c):04X}" for c in found[:5])},
        )


def single_line(text: str) -> str:
    """``text`` as one printable line: every run of whitespace and unprintable characters
    becomes one space, and the ends are trimmed."""
    return " ".join("".join(" " if is_unprintable(c) else c for c in text).split())
