"""The one rule that turns a label into a file-name-safe, readable slug (trial ids, figure file names)."""

from __future__ import annotations

import re


def slug(text: object) -> str:
    """Lower-case ``text`` with every run of characters other than ``a-z 0-9 . =`` replaced by ``-``.

    ``slug("FedIT (R/2)") == "fedit-r-2"``, ``slug("lr=0.001") == "lr=0.001"``; an empty result is ``"x"``.
    """
    return re.sub(r"[^a-z0-9.=]+", "-", str(text).lower()).strip("-") or "x"
