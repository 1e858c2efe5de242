"""A synthetic LPD-5 corpus: pypianoroll `.npz` multitracks in LPD-5's format (Drums, Piano,
Guitar, Bass, Strings; programs 0/0/24/32/48; resolution 24, 4/4 downbeats) laid out as the ingest
step writes it (`files/…` + `manifest.jsonl`).

Each song (`synth_song(seed)`, distinct per seed) has a form of repeating sections (intro, verse,
chorus, bridge, outro), a chord progression per section in one key shared by every track, a
drum groove per section with a fill in each section's last bar, bass on the chord roots
(monophonic), piano/guitar/strings voicing the chords in different rhythms, and a melody of
its own (in the piano's right hand or the strings) so no two seeds share a tune (validate groups
songs by their top line). Some songs lack a track, as LPD-5 songs do (an empty roll). Notes sit
on the 16th grid and repeated notes of one pitch are separated by a gap: LPD stores no onsets,
so an onset is where a pitch turns on (`lpdvae.data.music.grid`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pypianoroll

from lpdvae.io import sha256_file

RESOLUTION = 24
BAR = 4 * RESOLUTION
SIXTEENTH = RESOLUTION // 4
GAP = 2  # source steps of silence before a repeated note: its onset stays visible
LPD5 = [("Drums", 0, True), ("Piano", 0, False), ("Guitar", 24, False), ("Bass", 32, False),
        ("Strings", 48, False)]
LPD5_TRACKS = [
    {"name": "drums", "kind": "drums", "program": 0, "is_drum": True, "names": ["drum"], "programs": []},
    {"name": "piano", "kind": "polyphonic", "program": 0, "is_drum": False, "names": ["piano"], "programs": list(range(8))},
    {"name": "guitar", "kind": "polyphonic", "program": 24, "is_drum": False, "names": ["guitar"], "programs": list(range(24, 32))},
    {"name": "bass", "kind": "monophonic", "program": 32, "is_drum": False, "names": ["bass"], "programs": list(range(32, 40))},
    {"name": "strings", "kind": "polyphonic", "program": 48, "is_drum": False, "names": ["string"], "programs": list(range(40, 56))},
]
DRUMS, PIANO, GUITAR, BASS, STRINGS = range(5)
MISSING = (0.08, 0.2, 0.25, 0.08, 0.35)  # chance a song lacks each track (never its lead)

SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 3), (1, 4, 0, 5), (0, 5, 3, 4), (0, 2, 3, 4),
                (3, 0, 4, 5), (0, 3, 5, 4), (5, 4, 3, 4), (0, 4, 3, 0))  # scale degrees, one chord a bar
SECTION_BARS = {"intro": 4, "verse": 8, "chorus": 8, "bridge": 8, "outro": 4}
FORMS = (("intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"),
         ("verse", "chorus", "verse", "chorus", "bridge", "chorus", "chorus"),
         ("intro", "verse", "verse", "chorus", "verse", "chorus", "chorus", "outro"),
         ("intro", "verse", "chorus", "verse", "chorus", "outro"),
         ("intro", "verse", "chorus", "intro", "verse", "chorus", "bridge", "chorus", "chorus", "outro"))
# 16ths of one bar: "1" an onset (bass: "5" the fifth, "8" the octave)
KICKS = ("1000000010000000", "1000000010100000", "1000001000100000", "1001000010010000", "1000100010001000")
SNARES = ("0000100000001000", "0000100000001001", "0000100100001000", "0000000010000000")
HATS = ("1010101010101010", "1111111111111111", "1000100010001000", "0010001000100010")
COMPS = ("1000000010000000", "1000100010001000", "1001001000100000", "1010101010101010",
         "1000000000000000", "0010001000100010", "1000001010000010")
BASSES = ("1000000010000000", "1000100010001000", "1010101010101010", "1000001000100000",
          "1001001000105000", "1000000050008000")
KICK, SNARE, HAT, OPEN_HAT, CRASH, RIDE, TOMS = 36, 38, 42, 46, 49, 51, (50, 48, 47, 45)


@dataclass(frozen=True)
class Notes:
    """Note arrays of one track: start and duration (source steps), MIDI pitch."""

    start: np.ndarray
    dur: np.ndarray
    pitch: np.ndarray

    @staticmethod
    def join(parts: list[Notes]) -> Notes:
        if not parts:
            return Notes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        return Notes(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("start", "dur", "pitch")))

    def shifted(self, steps: int) -> Notes:
        return Notes(self.start + steps, self.dur, self.pitch)


def _hits(pattern: str) -> np.ndarray:
    return np.array([i for i, c in enumerate(pattern) if c != "0"], dtype=np.int64)


def _vary(rng: np.random.Generator, options: tuple[str, ...], add: float = 0.12, drop: float = 0.12) -> str:
    """One of `options` with a few 8ths added and off-beat onsets dropped: a section's own rhythm."""
    cells = list(options[rng.integers(len(options))])
    for i in range(1, 16):
        if cells[i] == "0" and i % 2 == 0 and rng.random() < add:
            cells[i] = "1"
        elif cells[i] != "0" and i % 4 and rng.random() < drop:
            cells[i] = "0"
    return "".join(cells)


def _legato(starts: np.ndarray, end: int, staccato: bool = False) -> np.ndarray:
    """Durations up to the next onset (or `end`) less the gap; staccato: at most an eighth."""
    nxt = np.append(starts[1:], end)
    dur = np.maximum(nxt - starts - GAP, 1)
    return np.minimum(dur, 2 * SIXTEENTH - GAP) if staccato else dur


def _chord(key: int, scale: tuple[int, ...], degree: int, lo: int, size: int = 3, seventh: bool = False) -> np.ndarray:
    """The triad on `degree` (size 4: plus its seventh, or the root an octave up), each tone of
    the triad in [lo, lo + 12): `lo` picks the inversion."""
    pcs = [key + scale[(degree + 2 * i) % 7] for i in range(4 if seventh else 3)]
    tones = sorted(lo + (pc - lo) % 12 for pc in pcs)
    if size > 3 and not seventh:
        tones.append(lo + (pcs[0] - lo) % 12 + 12)
    return np.array(tones, dtype=np.int64)


def _comp(chords: list[np.ndarray], pattern: str, staccato: bool) -> Notes:
    """Each bar's chord struck on the pattern's 16ths."""
    parts = []
    hits = _hits(pattern) * SIXTEENTH
    dur = _legato(hits, BAR, staccato)
    for b, chord in enumerate(chords):
        parts.append(Notes(np.repeat(hits + b * BAR, len(chord)), np.repeat(dur, len(chord)),
                           np.tile(chord, len(hits))))
    return Notes.join(parts)


def _bass(roots: list[int], pattern: str, approach: bool) -> Notes:
    """One note at a time: the bar's root (or its fifth / octave where the pattern says);
    `approach`: a bar's last note (from beat 4 on) leads a step into the next bar's root."""
    hits = _hits(pattern)
    offsets = np.array([{"5": 7, "8": 12}.get(pattern[i], 0) for i in hits], dtype=np.int64)
    starts = hits * SIXTEENTH
    dur = _legato(starts, BAR)
    parts = []
    for b, root in enumerate(roots):
        pitch = root + offsets
        if approach and b + 1 < len(roots) and hits[-1] >= 12 and len(hits) > 1:
            pitch[-1] = roots[b + 1] + (2 if roots[b + 1] < root else -1)
        parts.append(Notes(starts + b * BAR, dur, pitch))
    return Notes.join(parts)


def _melody(rng: np.random.Generator, key: int, scale: tuple[int, ...], degrees: list[int]) -> Notes:
    """A two-bar rhythm repeated through the section; a step-wise walk on the scale whose notes
    on beats 1 and 3 land on the bar's chord tones."""
    grid = np.flatnonzero(rng.random(16) < np.tile([0.9, 0.15, 0.6, 0.15], 4))
    second = np.flatnonzero(rng.random(16) < np.tile([0.8, 0.1, 0.5, 0.2], 4))
    rhythm = [grid, second]
    tones = np.array([key + 12 * o + s for o in range(11) for s in scale])
    tones = tones[(tones >= 72) & (tones < 89)]
    idx = int(rng.integers(2, len(tones) - 2))
    starts, pitches = [], []
    for b, degree in enumerate(degrees):
        chord_pcs = {(key + scale[(degree + 2 * i) % 7]) % 12 for i in range(3)}
        for s in rhythm[b % 2]:
            idx = int(np.clip(idx + rng.choice((-2, -1, -1, 0, 1, 1, 2)), 0, len(tones) - 1))
            if s % 8 == 0:  # a strong beat: the nearest chord tone
                near = [i for i in range(len(tones)) if tones[i] % 12 in chord_pcs]
                idx = min(near, key=lambda i: abs(i - idx))
            starts.append(b * BAR + s * SIXTEENTH)
            pitches.append(tones[idx])
    start = np.array(starts, dtype=np.int64)
    return Notes(start, _legato(start, len(degrees) * BAR), np.array(pitches, dtype=np.int64))


@dataclass(frozen=True)
class Section:
    """One section type of a song: its bars' chords and each track's notes (relative)."""

    bars: int
    tracks: tuple[Notes, ...]  # pitched tracks by index; drums at DRUMS without the fill
    active: np.ndarray  # [5] bool: which tracks play in this section


def _drums(rng: np.random.Generator, bars: int, intense: bool) -> Notes:
    """A one-bar groove (kick, snare, hats or ride) repeated for `bars` bars."""
    cymbal = RIDE if intense and rng.random() < 0.5 else (OPEN_HAT if rng.random() < 0.15 else HAT)
    layers = [(_vary(rng, KICKS, add=0.1, drop=0.2), KICK), (SNARES[rng.integers(len(SNARES))], SNARE),
              (HATS[rng.integers(len(HATS))], cymbal)]
    starts = np.concatenate([_hits(p) for p, _ in layers]) * SIXTEENTH
    pitch = np.concatenate([np.full(len(_hits(p)), n) for p, n in layers])
    starts = (starts[None, :] + BAR * np.arange(bars)[:, None]).reshape(-1)
    return Notes(starts, np.full(len(starts), SIXTEENTH - GAP), np.tile(pitch, bars))


def _fill(rng: np.random.Generator) -> Notes:
    """Beats 3-4 of a section's last bar: snare and toms on 8ths or 16ths, down the kit."""
    step = SIXTEENTH * int(rng.choice((1, 2)))
    starts = np.arange(BAR // 2, BAR, step)
    drums = np.array((SNARE, *TOMS))
    pitch = drums[np.minimum(np.arange(len(starts)) * len(drums) // len(starts), len(drums) - 1)]
    return Notes(starts, np.full(len(starts), SIXTEENTH - GAP), pitch)


def _section(rng: np.random.Generator, kind: str, key: int, scale: tuple[int, ...], lead: int) -> Section:
    """A section type's chords, rhythms and melody, fixed for every time it recurs."""
    bars = SECTION_BARS[kind] * (2 if kind in ("verse", "chorus") and rng.random() < 0.25 else 1)
    common = rng.random() < 0.6
    prog = PROGRESSIONS[rng.integers(len(PROGRESSIONS))] if common else tuple(rng.choice(6, 4).tolist())
    degrees = [prog[b % len(prog)] for b in range(bars)]
    lo = lambda base: base + int(rng.integers(-3, 4))  # noqa: E731  (the section's inversion)
    piano_lo, piano_rhythms = (57, (COMPS[0], COMPS[4], COMPS[1])) if lead == PIANO else (lo(60), COMPS)
    seventh = lead != PIANO and rng.random() < 0.4
    piano = _comp([_chord(key, scale, d, piano_lo, 3 if lead == PIANO else 4, seventh) for d in degrees],
                  _vary(rng, piano_rhythms), staccato=rng.random() < 0.3)
    melody = _melody(rng, key, scale, degrees)
    if lead == PIANO:
        piano = Notes.join([piano, melody])
    guitar_lo = lo(50)
    guitar = _comp([_chord(key, scale, d, guitar_lo, 4) for d in degrees], _vary(rng, COMPS[1:4] + COMPS[5:]),
                   staccato=True)
    strings_lo = 48 if lead == PIANO else lo(60)
    strings = melody if lead == STRINGS else \
        _comp([_chord(key, scale, d, strings_lo) for d in degrees], _vary(rng, COMPS[:2] + COMPS[4:5], drop=0), False)
    bass = _bass([33 + (key + scale[d] - 33) % 12 for d in degrees], _vary(rng, BASSES), rng.random() < 0.35)
    play = {"intro": (0.4, 0.8, 0.4, 0.5, 0.8), "outro": (0.5, 0.8, 0.5, 0.6, 0.8), "bridge": (0.8, 0.8, 0.7, 0.9, 0.9)}
    active = rng.random(5) < np.array(play.get(kind, (0.95, 0.85, 0.85, 0.95, 0.8)))
    active[lead] = True
    return Section(bars, (_drums(rng, bars, kind in ("chorus", "bridge")), piano, guitar, bass, strings), active)


def _vary_drums(rng: np.random.Generator, groove: Notes, bars: int) -> Notes:
    """One occurrence of a section's groove: a crash on its downbeat, a few ghost snares, and
    the fill replacing the last two beats."""
    fill_at = (bars - 1) * BAR + BAR // 2
    keep = groove.start < fill_at
    ghosts = np.flatnonzero(rng.random(bars * 16) < 0.03) * SIXTEENTH
    ghosts = ghosts[ghosts < fill_at]
    ghosts = ghosts[~np.isin(ghosts, groove.start[groove.pitch == SNARE])]
    parts = [Notes(groove.start[keep], groove.dur[keep], groove.pitch[keep]),
             Notes(ghosts, np.full(len(ghosts), SIXTEENTH - GAP), np.full(len(ghosts), SNARE)),
             _fill(rng).shifted((bars - 1) * BAR)]
    if rng.random() < 0.7:
        parts.append(Notes(np.zeros(1, np.int64), np.full(1, 2 * SIXTEENTH), np.full(1, CRASH)))
    return Notes.join(parts)


def _roll(rng: np.random.Generator, notes: Notes, n_steps: int) -> np.ndarray:
    """uint8 `[n_steps, 128]` velocities of `notes` (each cell its own velocity, as LPD's
    merged tracks mix instruments)."""
    roll = np.zeros((n_steps, 128), dtype=np.uint8)
    if not len(notes.start):
        return roll
    edges = np.zeros((128, n_steps + 1), dtype=np.int32)  # +1 at note on, -1 at note off
    np.add.at(edges, (notes.pitch, notes.start), 1)
    np.add.at(edges, (notes.pitch, np.minimum(notes.start + notes.dur, n_steps)), -1)
    active = np.cumsum(edges, axis=1)[:, :n_steps].T > 0
    roll[active] = rng.integers(40, 127, size=int(active.sum()), dtype=np.uint8)
    return roll


def synth_song(seed: int) -> pypianoroll.Multitrack:
    """One song, the same for the same seed; distinct seeds give distinct tunes."""
    rng = np.random.default_rng(seed)
    key = int(rng.integers(12))
    scale = SCALES["minor" if rng.random() < 0.35 else "major"]
    lead = PIANO if rng.random() < 0.6 else STRINGS
    present = rng.random(5) >= np.array(MISSING)
    present[lead] = True
    form = FORMS[rng.integers(len(FORMS))]
    sections = {kind: _section(rng, kind, key, scale, lead) for kind in dict.fromkeys(form)}
    parts: list[list[Notes]] = [[] for _ in LPD5]
    bar = 0
    for kind in form:
        sec = sections[kind]
        for t, notes in enumerate(sec.tracks):
            if sec.active[t] and present[t]:
                notes = _vary_drums(rng, notes, sec.bars) if t == DRUMS else notes
                parts[t].append(notes.shifted(bar * BAR))
        bar += sec.bars
    n_steps = bar * BAR
    tracks = [pypianoroll.StandardTrack(name=name, program=program, is_drum=is_drum,
                                        pianoroll=_roll(rng, Notes.join(parts[t]), n_steps))
              for t, (name, program, is_drum) in enumerate(LPD5)]
    downbeat = np.zeros(n_steps, dtype=bool)
    downbeat[::BAR] = True
    return pypianoroll.Multitrack(name=f"synth-{seed}", resolution=RESOLUTION,
                                  tempo=np.full(n_steps, float(rng.integers(80, 160))), downbeat=downbeat,
                                  tracks=tracks)


def write_corpus(raw_dir: Path, n_songs: int, seed0: int = 0) -> list[Path]:
    """`n_songs` synthetic songs under `raw_dir/files/` plus the ingest manifest."""
    files = raw_dir / "files"
    files.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for i in range(n_songs):
        path = files / f"{(seed0 + i) // 1000:03d}" / f"song{seed0 + i:06d}.npz"
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            pypianoroll.save(path, synth_song(seed0 + i))
        paths.append(path)
        rows.append({"path": str(path.relative_to(raw_dir)), "sha256": sha256_file(path),
                     "bytes": path.stat().st_size, "source": "synthetic://lpd5", "format": "npz"})
    rows.sort(key=lambda r: r["path"])
    (raw_dir / "manifest.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return paths
