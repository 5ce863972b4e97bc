"""The one "did you mean" helper: names close to a mistyped one, ranked by a typing distance.

``difflib``'s ratio ranks ``efficientnet_bo`` closer to ``b8``, ``b7`` and ``b6`` than to ``b0``: every
one-character change costs the same, and ties fall to list order.  Here the cost of a substitution
depends on the pair: characters that look alike (``o``/``0``, ``l``/``1``, ``s``/``5``) or differ only
in case, ``-``/``_``, cost a fraction of an unrelated pair, and swapping two neighbours costs half.
No torch: the zoo, the CLIs and the torch-free modules all use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# Characters a reader or a keyboard confuses; substituting one for its partner is cheap.
LOOK_ALIKE = ("o0", "l1", "i1", "il", "s5", "z2", "b8", "b6", "g9", "q9", "-_", " _", ".:")
_NEAR = {frozenset(p) for p in LOOK_ALIKE}
NEAR_COST = 0.3  # a look-alike substitution
CASE_COST = 0.1  # the same letter in another case
SWAP_COST = 0.5  # two neighbours typed in the wrong order


def _substitution(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if a.lower() == b.lower():
        return CASE_COST
    return NEAR_COST if frozenset((a.lower(), b.lower())) in _NEAR else 1.0


def typo_distance(a: str, b: str) -> float:
    """Edit distance (insert, delete, substitute, swap neighbours) with cheap look-alike substitutions."""
    prev2: list[float] = []
    prev = [float(j) for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        cur = [float(i)] + [0.0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + _substitution(a[i - 1], b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1] and a[i - 1] != a[i - 2]:
                cur[j] = min(cur[j], prev2[j - 2] + SWAP_COST)
        prev2, prev = prev, cur
    return prev[len(b)]


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``choices`` nearest to ``word``, nearest first; none when nothing is close.

    A choice is close when its distance is at most a third of the longer name (at least 1.5), so a
    one-letter slip in a short name and a few in a long one are both found, and ``banana`` finds no
    device.  Ties go to difflib's similarity ratio, then to the name.
    """
    word = str(word)
    scored = []
    for c in dict.fromkeys(str(c) for c in choices):
        d = typo_distance(word, c)
        if d <= max(1.5, max(len(word), len(c)) / 3):
            scored.append((d, -difflib.SequenceMatcher(None, word, c).ratio(), c))
    return [c for _, _, c in sorted(scored)[:n]]


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """``"; did you mean a, b?"`` for an error message, or ``""`` when nothing is close."""
    close = close_matches(word, choices, n)
    return f"; did you mean {', '.join(close)}?" if close else ""
