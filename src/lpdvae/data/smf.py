"""The project's one MIDI writer: a type-1 Standard MIDI File from notes in ticks.

A conductor track (the song's name when it has one, tempo, time signature) and one named
track per part (program change, then its notes). The bytes are laid out as mido writes the same messages: note-offs as 0x80 with
velocity 0, running status, a note-off before a note-on on the same tick. tests/test_demo.py
checks that byte for byte against mido (tests/midi_reference.py).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

DRUM_CHANNEL = 9  # General MIDI percussion


@dataclass(frozen=True)
class Part:
    """One track: its name, channel, program and notes as (start tick, end tick, pitch)."""

    name: str
    channel: int
    program: int
    notes: Sequence[tuple[int, int, int]]
    velocity: int


def varlen(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, most significant first."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def tempo_us(bpm: float) -> int:
    """Microseconds a beat, as mido.bpm2tempo."""
    return round(60_000_000 / bpm)


def _name(text: str) -> bytes:
    """A track_name meta event at delta 0; UTF-8, as mido writes with charset="utf-8" (chorale
    titles carry ’ and umlauts)."""
    raw = text.encode("utf-8")
    return b"\x00\xff\x03" + varlen(len(raw)) + raw


def _conductor(tempo: int, numerator: int, denominator: int, name: str) -> bytes:
    power = denominator.bit_length() - 1  # the file stores the denominator as a power of 2
    return ((_name(name) if name else b"")  # the song's sequence name, when it has one
            + b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big")  # set_tempo
            + b"\x00\xff\x58\x04" + bytes((numerator, power, 24, 8))  # time_signature, mido's defaults
            + b"\x00\xff\x2f\x00")  # end_of_track


def _track(part: Part) -> bytes:
    ch = part.channel
    data = bytearray(_name(part.name))
    data += bytes((0, 0xC0 | ch, part.program))
    events = [(start, 1, pitch) for start, _, pitch in part.notes]
    events += [(end, 0, pitch) for _, end, pitch in part.notes]
    running, now = 0xC0 | ch, 0
    for tick, on, pitch in sorted(events):
        status = (0x90 if on else 0x80) | ch
        data += varlen(tick - now)
        if status != running:
            data.append(status)
            running = status
        data += bytes((pitch, part.velocity if on else 0))
        now = tick
    return bytes(data + b"\x00\xff\x2f\x00")


def smf_bytes(parts: Sequence[Part], ticks_per_beat: int, tempo: int,
              time_signature: tuple[int, int] = (4, 4), name: str = "") -> bytes:
    """The file's bytes; `tempo` in microseconds a beat (`tempo_us`); `name` the sequence name
    (the conductor track's name), left out when empty."""
    tracks = [_conductor(tempo, *time_signature, name), *(_track(p) for p in parts)]
    header = b"MThd" + struct.pack(">LHHH", 6, 1, len(tracks), ticks_per_beat)
    return header + b"".join(b"MTrk" + struct.pack(">L", len(t)) + t for t in tracks)


def channels(is_drum: Sequence[bool]) -> list[int]:
    """A channel per track: drums on channel 10 (index 9), the others in order around it."""
    melodic = [c for c in range(16) if c != DRUM_CHANNEL]
    out, k = [], 0
    for drum in is_drum:
        out.append(DRUM_CHANNEL if drum else melodic[k % len(melodic)])
        k += not drum
    return out
