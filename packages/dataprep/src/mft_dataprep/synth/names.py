"""Random identifiers for synthetic functions and their arguments.

docs/reference.md §7: a 2M-parameter model trained on names from a small fixed pool fails on unseen names; random
names in training teach it to copy the argument names from the prompt. Names are 2 to 3 consonant-vowel
syllables (`kobami`, `te_rovu`), sometimes with an underscore or a final consonant: about 10^6 possible names,
never a Python keyword or builtin, never a word of the fixed instructions and docstring templates (a name
`times` in "Return times times 3." would be ambiguous), never the comprehension variable.
"""

from __future__ import annotations

import builtins
import keyword
import random
import re

CONSONANTS = "bdfghklmnprstvz"
VOWELS = "aeiou"
FINALS = "klmnrs"

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def reserved_words(*texts: str) -> frozenset[str]:
    """Keywords, builtins and every word of `texts` (lower-cased): names a generated identifier must avoid."""
    words = {w.lower() for text in texts for w in _WORD.findall(text)}
    return frozenset(set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | words | {"x"})


def random_name(rng: random.Random, min_syllables: int, max_syllables: int) -> str:
    """One identifier: `min_syllables`..`max_syllables` CV syllables, maybe an underscore, maybe a final consonant."""
    count = rng.randint(min_syllables, max_syllables)
    syllables = [rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(count)]
    if rng.random() < 0.3:
        syllables[-1] += rng.choice(FINALS)
    if count >= 2 and rng.random() < 0.25:
        cut = rng.randint(1, count - 1)
        return "".join(syllables[:cut]) + "_" + "".join(syllables[cut:])
    return "".join(syllables)


class NameSource:
    """Draws identifiers that avoid `reserved`, and (for a hard split) anything in `exclude`."""

    def __init__(
        self,
        rng: random.Random,
        reserved: frozenset[str],
        min_syllables: int,
        max_syllables: int,
        pool: list[str] | None = None,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self._rng = rng
        self._reserved = reserved
        self._min = min_syllables
        self._max = max_syllables
        self._pool = pool  # draw from these (a sorted list) instead of generating
        self._exclude = exclude

    def draw(self, count: int, avoid: set[str] | frozenset[str] = frozenset()) -> tuple[str, ...]:
        """`count` distinct names, none in `avoid`."""
        names: list[str] = []
        attempts = 0
        while len(names) < count:
            attempts += 1
            if attempts > 10_000:
                raise RuntimeError(
                    f"could not draw {count} distinct names (pool too small or too many exclusions)"
                )
            if self._pool is not None:
                name = self._rng.choice(self._pool)
            else:
                name = random_name(self._rng, self._min, self._max)
            if name in self._reserved or name in self._exclude or name in avoid or name in names:
                continue
            names.append(name)
        return tuple(names)
