"""The MIDI adapter: symusic (C++) parses into the `pretty_midi.PrettyMIDI` that pretty_midi's
own parser would build (same tick->seconds table, same notes in the same order), so everything
downstream (pypianoroll's quantization) gives the rolls `pypianoroll.read` gives
(tests/test_music.py checks this), far faster than mido's pure-Python parsing
(`python -m benchmarks.midi_parse_bench`). Files whose events symusic and
pretty_midi pair differently (overlapping or zero-length notes of one pitch) fall back to
pretty_midi.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import pretty_midi

from lpdvae.data.music.song import SongError

log = logging.getLogger(__name__)

# "symusic" | "pretty_midi"; pretty_midi where symusic is not installed
MIDI_PARSER = "symusic" if importlib.util.find_spec("symusic") else "pretty_midi"


def parse_midi(path: Path) -> tuple[pretty_midi.PrettyMIDI, str]:
    """The file as a PrettyMIDI and the parser that read it; SongError `corrupt_midi` otherwise."""
    if MIDI_PARSER == "symusic":
        try:
            pm = symusic_pretty_midi(path)
        except SongError:
            raise
        except Exception as exc:  # noqa: BLE001 - symusic is stricter than mido: let pretty_midi decide
            log.debug("%s: symusic cannot parse (%s); trying pretty_midi", path, exc)
            pm = None
        if pm is not None:
            return pm, "symusic"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(str(path)), "pretty_midi"
    except Exception as exc:  # noqa: BLE001 - mido raises OSError/EOFError/KeyError/ValueError...
        raise SongError(path, "corrupt_midi", f"not a readable MIDI file: {exc}") from None


class _EndTimePrettyMIDI(pretty_midi.PrettyMIDI):
    """A PrettyMIDI whose end time (last event of any kind) was computed from the symusic score."""

    end_time: float = 0.0

    def get_end_time(self) -> float:
        return self.end_time


def symusic_pretty_midi(path: str | Path) -> pretty_midi.PrettyMIDI | None:
    """Parse with symusic into the PrettyMIDI pretty_midi's parser would build, or None when the
    file pairs note events ambiguously (overlapping / zero-length notes of one pitch): pretty_midi
    and symusic resolve those differently, so the caller falls back to pretty_midi."""
    import symusic

    score = symusic.Score(str(path))
    tpq = int(score.ticks_per_quarter)
    if tpq <= 0:
        raise SongError(path, "corrupt_midi", f"ticks per quarter note is {tpq}")
    tracks = [(t, t.notes.numpy()) for t in score.tracks if t.note_num() > 0]
    if any(_ambiguous_notes(arrays) for _, arrays in tracks):
        return None
    last_tick = max([int(score.end())] + [int(t.time) for t in score.tempos] +
                    [int(t.time) for t in score.time_signatures])
    if last_tick + 1 > pretty_midi.MAX_TICK:  # pretty_midi would refuse it too, after a slower parse
        raise SongError(path, "too_long", f"last event at tick {last_tick} ({last_tick / tpq:.0f} beats) is past "
                        f"pretty_midi's limit of {pretty_midi.MAX_TICK:.0f} ticks: probably corrupt")
    pm = _EndTimePrettyMIDI(resolution=tpq)
    pm._tick_scales = _tick_scales(score, tpq)
    pm._update_tick_to_time(last_tick + 1)
    tick_to_time = pm._PrettyMIDI__tick_to_time
    pm.time_signature_changes = [
        pretty_midi.TimeSignature(int(t.numerator), int(t.denominator), float(tick_to_time[t.time]))
        for t in score.time_signatures
    ]
    pm.instruments = [_instrument(t, arrays, tick_to_time) for t, arrays in tracks]
    pm.end_time = float(tick_to_time[_last_event_tick(score, tracks)])
    return pm


def _ambiguous_notes(arrays: dict[str, np.ndarray]) -> bool:
    if (arrays["duration"] <= 0).any():
        return True
    order = np.lexsort((arrays["time"], arrays["pitch"]))
    pitch, start = arrays["pitch"][order], arrays["time"][order].astype(np.int64)
    end = start + arrays["duration"][order]
    same = pitch[1:] == pitch[:-1]
    return bool((same & (start[1:] < end[:-1])).any())


def _tick_scales(score, tpq: int) -> list[tuple[int, float]]:
    """pretty_midi's `_load_tempo_changes`, from symusic's tempo events (integer µs per quarter)."""
    scales = [(0, 60.0 / (120.0 * tpq))]
    for tempo in score.tempos:
        scale = 60.0 / ((6e7 / int(tempo.mspq)) * tpq)
        if int(tempo.time) == 0:
            scales = [(0, scale)]
        elif scale != scales[-1][1]:
            scales.append((int(tempo.time), scale))
    return scales


def _instrument(track, arrays: dict[str, np.ndarray], tick_to_time: np.ndarray) -> pretty_midi.Instrument:
    """Notes in pretty_midi's order (by note-off tick; same-pitch ties keep note-on order)."""
    start = arrays["time"].astype(np.int64)
    end = start + arrays["duration"]
    order = np.lexsort((start, end))
    starts, ends = tick_to_time[start[order]], tick_to_time[end[order]]
    pitches, velocities = arrays["pitch"][order], arrays["velocity"][order].astype(np.int64) & 0xFF
    inst = pretty_midi.Instrument(program=int(track.program), is_drum=bool(track.is_drum), name=str(track.name))
    inst.notes = [pretty_midi.Note(int(v), int(p), float(s), float(e))
                  for v, p, s, e in zip(velocities.tolist(), pitches.tolist(), starts.tolist(), ends.tolist(), strict=True)]
    return inst


def _last_event_tick(score, tracks) -> int:
    """The tick of pretty_midi's `get_end_time`: notes, controls, bends, meters, keys, lyrics, tempi."""
    ticks = [0]
    for track, arrays in tracks:
        ticks.append(int((arrays["time"].astype(np.int64) + arrays["duration"]).max()))
        ticks += [int(c.time) for c in track.controls[-1:]] + [int(b.time) for b in track.pitch_bends[-1:]]
        ticks += [int(x.time) for x in track.lyrics[-1:]]
    ticks += [int(x.time) for x in score.time_signatures] + [int(x.time) for x in score.key_signatures]
    ticks += [int(x.time) for x in score.tempos]
    return max(ticks)


_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}  # channel messages


def _read_varlen(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for k in range(at, min(at + 4, len(data))):
        value = (value << 7) | (data[k] & 0x7F)
        if not data[k] & 0x80:
            return value, k + 1
    raise ValueError("bad variable-length quantity")


def sequence_name(data: bytes) -> str:
    """The sequence name of a Standard MIDI File (its first track's name, when that track holds
    no notes: a type-1 conductor track or a type-0 file's one track), or "" when it has none.

    Read from the bytes: neither pretty_midi nor symusic keep the name of a track without notes.
    A malformed file gives "" (the loaders report what is wrong with it)."""
    try:
        if data[:4] != b"MThd" or data[14:18] != b"MTrk":
            return ""
        kind, end = int.from_bytes(data[8:10], "big"), 22 + int.from_bytes(data[18:22], "big")
        at, name, status = 22, "", 0
        while at < min(end, len(data)):
            _, at = _read_varlen(data, at)
            if data[at] == 0xFF:
                meta, (length, at) = data[at + 1], _read_varlen(data, at + 2)
                if meta == 0x03 and not name:
                    name = data[at:at + length].decode("utf-8", "replace").strip()
                at += length
            elif data[at] in (0xF0, 0xF7):
                length, at = _read_varlen(data, at + 1)
                at += length
            else:
                status = data[at] if data[at] & 0x80 else status
                at += 1 if data[at] & 0x80 else 0
                if status & 0xF0 == 0x90 and kind != 0:  # a note: this is not a conductor track
                    return ""
                at += _DATA_BYTES.get(status & 0xF0, 0)
        return name
    except (IndexError, ValueError):
        return ""
