"""Where a finding is: the side and lung zone stated next to its mention.

Only words in the mention's own phrase count (a few tokens either side, stopped at
clause words and punctuation), so "no left effusion, right pneumothorax" puts the
effusion on the left and the pneumothorax on the right. Nothing is inferred: a mention
without a side or zone word has no location.
"""

from __future__ import annotations

from collections.abc import Sequence

_SIDE_WORDS = {
    "left": "left",
    "right": "right",
    "bilateral": "bilateral",
    "bilaterally": "bilateral",
    "both": "bilateral",
    "bibasilar": "bilateral",
    "bibasal": "bilateral",
    "biapical": "bilateral",
}
_ZONE_WORDS = {
    "upper": "upper",
    "apex": "upper",
    "apices": "upper",
    "apical": "upper",
    "biapical": "upper",
    "middle": "middle",
    "mid": "middle",
    "midlung": "middle",
    "lingula": "middle",
    "lingular": "middle",
    "lower": "lower",
    "base": "lower",
    "bases": "lower",
    "basilar": "lower",
    "basal": "lower",
    "bibasilar": "lower",
    "bibasal": "lower",
}
# Words where a location phrase stops (clause words and punctuation).
_LOCATION_STOPS = frozenset(
    {
        *("but", "however", "although", "though", "which", "whereas", "while", "yet"),
        *("except", "aside", "apart", "nevertheless", "nonetheless", "otherwise", "that"),
        *("who", "where", "since", "because", "and", "or", "with", "without", "no"),
        *("versus", "vs", "there", ",", ";", ":", "."),
    }
)
_LOCATION_LEFT_TOKENS = 6
_LOCATION_RIGHT_TOKENS = 8


def location(
    words: Sequence[str], sent_start: int, sent_end: int, start: int, end: int
) -> dict[str, str]:
    """Side and zone words in the phrase around a mention (same clause, a few tokens)."""
    i = max(sent_start, start - _LOCATION_LEFT_TOKENS)
    left = words[i:start]
    for j in range(len(left) - 1, -1, -1):
        if left[j] in _LOCATION_STOPS:
            left = left[j + 1 :]
            break
    right = words[end : min(sent_end, end + _LOCATION_RIGHT_TOKENS)]
    for j, word in enumerate(right):
        if word in _LOCATION_STOPS:
            right = right[:j]
            break
    near = [*left, *words[start:end], *right]
    sides = {_SIDE_WORDS[w] for w in near if w in _SIDE_WORDS}
    zones = [_ZONE_WORDS[w] for w in near if w in _ZONE_WORDS]
    found: dict[str, str] = {}
    if "bilateral" in sides or {"left", "right"} <= sides:
        found["side"] = "bilateral"
    elif sides:
        found["side"] = sides.pop()
    if zones:
        found["zone"] = zones[0]
    return found
