"""Which split a demo track belongs to, and which soundfont renders it: decided here, from the seed.

Tracks are dealt in blocks of 20 (14 train, 3 val, 3 test, shuffled per block and
group), so every 20 tracks of a kind hold exactly 15 % test and growing the corpus
never moves an old track. Groups: mixtures, solo tracks, chord takes, and the clips of each family.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")
BLOCK = ("train",) * 14 + ("val",) * 3 + ("test",) * 3
GROUP_MIXTURE, GROUP_SOLO, GROUP_TAKES, GROUP_CLIPS = 0, 1, 2, 10  # clips: GROUP_CLIPS + family index


def split_of(seed: int, group: int, index: int) -> str:
    block, slot = divmod(index, len(BLOCK))
    perm = np.random.default_rng([seed, 7919, group, block]).permutation(len(BLOCK))
    return BLOCK[int(perm[slot])]


def soundfont_of(seed: int, group: int, index: int, choices: list[str]) -> str:
    """One of the split's soundfonts, drawn per track."""
    rng = np.random.default_rng([seed, 104729, group, index])
    return choices[int(rng.integers(len(choices)))]
