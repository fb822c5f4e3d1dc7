"""Names: file-name-safe slugs of labels, and the label of a pack of client jobs.

:func:`slug` is the one rule that turns a label into a readable slug (trial ids, figure file names);
:func:`pack_label` names a pack of client jobs in messages (the driver's job labels, out-of-memory errors).
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def slug(text: object) -> str:
    """Lower-case ``text`` with every run of characters other than ``a-z 0-9 . =`` replaced by ``-``.

    ``slug("FedIT (R/2)") == "fedit-r-2"``, ``slug("lr=0.001") == "lr=0.001"``; an empty result is ``"x"``.
    """
    return re.sub(r"[^a-z0-9.=]+", "-", str(text).lower()).strip("-") or "x"


def pack_label(client_ids: Sequence[int], round_idx: int) -> str:
    """``"clients 0, 3 in round 2"``: a pack of client jobs in errors (``round_idx`` 0-based, shown 1-based)."""
    return f"clients {', '.join(str(c) for c in client_ids)} in round {round_idx + 1}"
