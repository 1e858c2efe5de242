"""The golden path the demo corpus's lean reader and MIDI writer must match byte for byte:
music21's parse (`demo.music21_parts`) written by mido. Test and benchmark code only; the
project writes MIDI with `lpdvae.data.smf`."""

from __future__ import annotations

import io
from pathlib import Path

import mido

from lpdvae.data import demo


def mido_bytes(parts: list[list[tuple[int, int, int]]], name: str = "") -> bytes:
    """What `demo.midi_bytes` must write: type-1 MIDI, a conductor track (sequence name when
    given, tempo, 4/4) plus one named track per voice, through mido's objects and writer."""
    mid = mido.MidiFile(type=1, ticks_per_beat=demo.TICKS_PER_BEAT, charset="utf-8")
    named = [mido.MetaMessage("track_name", name=name, time=0)] if name else []
    mid.tracks.append(mido.MidiTrack(named + [
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(demo.TEMPO_BPM), time=0),
        mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
        mido.MetaMessage("end_of_track", time=0),
    ]))
    for channel, (voice, notes) in enumerate(zip(demo.VOICES, parts, strict=True)):
        events = sorted([(start, 1, pitch) for start, _, pitch in notes]
                        + [(end, 0, pitch) for _, end, pitch in notes])  # off before on at a tick
        track = mido.MidiTrack([
            mido.MetaMessage("track_name", name=voice, time=0),
            mido.Message("program_change", channel=channel, program=demo.PROGRAM, time=0),
        ])
        now = 0
        for tick, on, pitch in events:
            track.append(mido.Message("note_on" if on else "note_off", channel=channel, note=pitch,
                                      velocity=demo.VELOCITY if on else 0, time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def render_chorale_reference(path: Path) -> bytes | None:
    """`demo.render_chorale` through music21 and mido, or None when music21 rejects the file."""
    parts = demo.music21_parts(path)
    return None if parts is None else mido_bytes(parts, demo.chorale_name(path))
