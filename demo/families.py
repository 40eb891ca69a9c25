"""General MIDI programs per role and the instrument families the demo tags (``tag_open``).

Family names follow what MIR researchers tag (Medley-solos-DB, OpenMIC-2018):
``piano``, ``acoustic guitar``, ``electric guitar``, ``violin``, ... A family is a
set of GM programs (0-based) with the range a player uses and how it is played.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    tag: str  # the tag_open value
    programs: tuple[int, ...]  # GM programs, 0-based
    low: int  # melodic range (MIDI) for solo phrases and leads
    high: int
    vibrato: bool  # players bend the pitch (vibrato, glides): realised as pitch-bend data
    sustained: bool  # the note holds while the key is down (winds, bowed, organ)
    sounding: int = 0  # semitones from the key to the lowest sounding partial (GM organs draw a 16' stop)


FAMILIES: dict[str, Family] = {
    f.tag: f
    for f in (
        Family("piano", (0, 1, 2), 55, 88, False, False),
        Family("acoustic guitar", (24, 25), 52, 81, False, False),
        Family("electric guitar", (26, 27, 29), 52, 84, True, False),
        Family("organ", (16, 17, 18, 19), 55, 84, False, True, -12),
        Family("violin", (40,), 57, 91, True, True),
        Family("cello", (42,), 40, 69, True, True),
        Family("flute", (73,), 62, 91, True, True),
        Family("clarinet", (71,), 52, 84, False, True),
        Family("trumpet", (56,), 57, 82, True, True),
        Family("saxophone", (64, 65, 66), 51, 80, True, True),
        # accompaniment / lead only (no solo clips)
        Family("electric piano", (4, 5), 55, 84, False, False),
        Family("mallet percussion", (11, 12), 60, 88, False, False),
        Family("strings", (48, 49, 50), 48, 84, False, True),
        Family("brass section", (61,), 48, 79, False, True),
        Family("synthesizer", (80, 81, 88, 89, 90), 55, 88, True, True),
        Family("voice", (52, 53), 57, 79, False, True),
        Family("accordion", (21,), 55, 84, False, True),
        Family("oboe", (68,), 60, 88, True, True),
        Family("bass", (32, 33, 34, 35, 38), 28, 52, False, False),
        Family("drums", (), 0, 0, False, False),
    )
}

# Solo clips (Medley-solos-DB style) come from these families, one tag each.
SOLO_FAMILIES: tuple[str, ...] = (
    "piano",
    "acoustic guitar",
    "electric guitar",
    "organ",
    "violin",
    "cello",
    "flute",
    "clarinet",
    "trumpet",
    "saxophone",
)
VOICE_CLIP_FAMILIES: tuple[str, ...] = ("voice",)  # clips added by synthesize.voice_clips (sung, arrange.compose_clip)


def clip_families(voice: bool) -> tuple[str, ...]:
    """The families a soundfont-rendered corpus has solo clips of, in split-group order (a family's
    index is its split group and its clips' seed: the voice clips come last, so they move no other clip)."""
    return SOLO_FAMILIES + (VOICE_CLIP_FAMILIES if voice else ())


# Who plays the chords in a mixture, and how (patterns in arrange.py).
COMP_FAMILIES: tuple[str, ...] = (
    "piano",
    "electric piano",
    "acoustic guitar",
    "electric guitar",
    "organ",
    "strings",
    "brass section",
    "synthesizer",
    "mallet percussion",
    "accordion",
)
# Who sings the tune over the band.
LEAD_FAMILIES: tuple[str, ...] = (
    "flute",
    "violin",
    "clarinet",
    "trumpet",
    "saxophone",
    "oboe",
    "electric guitar",
    "synthesizer",
    "organ",
    "voice",
)
# Drum kits: bank 128 presets (standard, room, power, electronic, TR-808, jazz, brush).
DRUM_KITS: tuple[int, ...] = (0, 8, 16, 24, 25, 32, 40)
