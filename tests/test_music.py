"""Song loading, track merging, rolls and phrases; symusic parses to the same rolls as pypianoroll."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pypianoroll
import pytest

from lpdvae.music.grid import multitrack_roll, npz_roll
from lpdvae.music.load import read_song
from lpdvae.music.midi import symusic_pretty_midi
from lpdvae.music.phrases import cut_phrases, song_phrases
from lpdvae.music.song import SongError, song_format
from lpdvae.music.tracks import assign_track
from lpdvae.params import TrackSpec
from tests import songkit

REP = songkit.params().representation


def _track_key(mt: pypianoroll.Multitrack) -> list[tuple]:
    return sorted((t.name, int(t.program), bool(t.is_drum), t.pianoroll.shape,
                   np.clip(t.pianoroll, 0, 127).astype(np.uint8).tobytes()) for t in mt.tracks)


def _reference(path: Path) -> pypianoroll.Multitrack:
    """pypianoroll's own MIDI reader (pretty_midi parser), the rolls symusic must reproduce."""
    with np.errstate(all="ignore"):
        return pypianoroll.read(path, resolution=REP.source_resolution, mode="sum")


def _crafted_midi(path: Path, seed: int, time_signature: bool = True, meter_change: bool = False) -> Path:
    """Several tracks and channels, drums, tempo changes, an odd tpq, a pickup before beat one."""
    rng = np.random.default_rng(seed)
    tpq = int(rng.choice([96, 220, 480, 960]))
    mid = mido.MidiFile(ticks_per_beat=tpq)
    meta = mido.MidiTrack()
    mid.tracks.append(meta)
    events = [(0, mido.MetaMessage("set_tempo", tempo=int(rng.integers(300_000, 900_000))))]
    events += [(int(rng.integers(1, 64 * tpq)), mido.MetaMessage("set_tempo", tempo=int(rng.integers(300_000, 900_000))))
               for _ in range(3)]
    if time_signature:
        events.append((0, mido.MetaMessage("time_signature", numerator=4, denominator=4)))
    if meter_change:
        events.append((16 * tpq, mido.MetaMessage("time_signature", numerator=3, denominator=4)))
    last = 0
    for tick, msg in sorted(events, key=lambda e: e[0]):
        meta.append(msg.copy(time=tick - last))
        last = tick
    for channel, program in [(0, 0), (1, 33), (9, 0)]:
        track = mido.MidiTrack()
        mid.tracks.append(track)
        track.append(mido.MetaMessage("track_name", name=f"part{channel}"))
        track.append(mido.Message("program_change", channel=channel, program=program))
        notes, free, t = [], {}, int(rng.integers(0, tpq))
        for _ in range(120):
            pitch = int(rng.integers(30, 90))
            start = max(t, free.get(pitch, 0))
            end = start + int(rng.integers(1, 2 * tpq))
            notes += [(start, 1, pitch, int(rng.integers(1, 128))), (end, 0, pitch, 0)]
            free[pitch] = end + int(rng.integers(0, 3))
            t += int(rng.integers(0, tpq))
        last = 0
        for tick, on, pitch, vel in sorted(notes):
            track.append(mido.Message("note_on" if on else "note_off", channel=channel, note=pitch,
                                      velocity=vel, time=tick - last))
            last = tick
    mid.save(str(path))
    return path


@pytest.mark.parametrize("seed", range(6))
def test_symusic_rolls_identical_to_pypianoroll(tmp_path, seed):
    pytest.importorskip("symusic")
    path = _crafted_midi(tmp_path / "x.mid", seed, time_signature=seed % 3 != 0, meter_change=seed == 4)
    pm = symusic_pretty_midi(path)
    assert pm is not None
    with np.errstate(all="ignore"):
        fast = pypianoroll.from_pretty_midi(pm, resolution=REP.source_resolution, mode="sum")
    ref = _reference(path)
    assert _track_key(fast) == _track_key(ref)
    assert np.array_equal(fast.tempo, ref.tempo)
    assert (fast.downbeat is None) == (ref.downbeat is None)
    if ref.downbeat is not None:
        assert np.array_equal(fast.downbeat, ref.downbeat)
    song = read_song(path, REP)
    assert song.parser == "symusic"


def test_chorale_style_midi_identical_and_loaded_with_symusic(tmp_path):
    pytest.importorskip("symusic")
    path = songkit.midi_song(tmp_path / "c.mid", seed=3)
    song = read_song(path, REP)
    assert song.parser == "symusic" and song.time_signature == "4/4"
    ref = _reference(path)
    assert [t.pianoroll.tobytes() for t in song.multitrack.tracks] == \
        [np.clip(t.pianoroll, 0, 127).astype(np.uint8).tobytes() for t in ref.tracks]


def test_overlapping_same_pitch_notes_fall_back_to_pretty_midi(tmp_path):
    pytest.importorskip("symusic")
    mid = mido.MidiFile(ticks_per_beat=96)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for kind, dt in [("note_on", 0), ("note_on", 48), ("note_off", 48), ("note_off", 96),
                     ("note_on", 96), ("note_off", 384)]:
        track.append(mido.Message(kind, note=60, velocity=90 if kind == "note_on" else 0, time=dt))
    path = tmp_path / "overlap.mid"
    mid.save(str(path))
    assert symusic_pretty_midi(path) is None
    song = read_song(path, REP)
    assert song.parser == "pretty_midi"
    assert _track_key(song.multitrack) == _track_key(_reference(path))


@pytest.mark.parametrize("name", sorted(songkit.BAD_REASONS))
def test_unreadable_files_raise_song_error_with_reason(tmp_path, name):
    songkit.add_bad_songs(tmp_path)
    path = tmp_path / "files" / name
    reason = songkit.BAD_REASONS[name]
    if reason in ("time_signature", "nan_values", "velocity_out_of_range"):  # readable: GX judges these
        song = read_song(path, REP)
        assert song.time_signature == "3/4" if reason == "time_signature" else song.format == "npz"
        return
    with pytest.raises(SongError) as err:
        read_song(path, REP)
    assert err.value.reason == reason
    assert str(path) in str(err.value)


def test_velocity_and_nan_reported_by_loader(tmp_path):
    songkit.add_bad_songs(tmp_path)
    loud = read_song(tmp_path / "files/bad/loud.npz", REP)
    assert loud.max_velocity == 200
    nan = read_song(tmp_path / "files/bad/nan.npz", REP)
    assert any(np.isnan(t.pianoroll).any() for t in nan.multitrack.tracks if t.pianoroll.dtype.kind == "f")


def test_time_signatures(tmp_path):
    plain = mido.MidiFile(ticks_per_beat=96)  # no time signature event (pretty_midi would add 4/4)
    plain.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=80, time=0),
                                        mido.Message("note_off", note=60, velocity=0, time=384)]))
    plain.save(str(tmp_path / "plain.mid"))
    assert read_song(tmp_path / "plain.mid", REP).time_signature_source == "midi-default"
    mixed = _crafted_midi(tmp_path / "mixed.mid", 1, meter_change=True)
    assert read_song(mixed, REP).time_signature == "mixed(4/4,3/4)"
    npz = songkit.npz_song(tmp_path / "a.npz", seed=1)
    song = read_song(npz, REP)
    assert (song.time_signature, song.time_signature_source) == ("4/4", "downbeat")


TRACKS = (
    TrackSpec("drums", is_drum=True, names=("drum",)),
    TrackSpec("piano", names=("piano", "keys"), programs=tuple(range(8))),
    TrackSpec("bass", program=32, names=("bass",), programs=tuple(range(32, 40))),
)


@pytest.mark.parametrize(("name", "program", "is_drum", "expected"), [
    ("Grand PIANO", 40, False, 1),   # name wins over program
    ("Track 3", 3, False, 1),        # GM program
    ("Fretless", 35, False, 2),
    ("Bass Drum", 0, True, 0),       # drums never land in a melodic track
    ("Percussion", 0, True, 0),      # any drum track -> the drum entry
    ("Violin", 40, False, None),     # unmatched: dropped
])
def test_assign_track(name, program, is_drum, expected):
    assert assign_track(name, program, is_drum, TRACKS) == expected


def test_merge_counts_unmatched_and_takes_union(tmp_path):
    steps = 4 * 4 * 24
    a = np.zeros((steps, 128), np.uint8)
    b = np.zeros((steps, 128), np.uint8)
    a[0:24, 60] = 100
    b[48:72, 64] = 90
    mt = pypianoroll.Multitrack(resolution=24, tracks=[
        pypianoroll.StandardTrack(name="Piano L", pianoroll=a), pypianoroll.StandardTrack(name="keys R", pianoroll=b),
        pypianoroll.StandardTrack(name="Flute", program=73, pianoroll=b)])
    roll, dropped = multitrack_roll(mt, TRACKS, REP)
    assert dropped == 1
    assert roll.shape == (3, 4 * REP.steps_per_bar, REP.n_pitches)
    assert roll[1, 0:12, 60 - REP.lowest_pitch].all() and roll[1, 24:36, 64 - REP.lowest_pitch].all()
    # a quarter note stays 12 steps long at 12 per beat (floor, not round, when downsampling)
    assert roll[1].sum() == 24 and not roll[0].any() and not roll[2].any()


@pytest.mark.parametrize("seed", range(4))
def test_npz_fast_path_equals_pypianoroll_path(tmp_path, seed):
    rolls = songkit.npz_roll(seed, n_bars=6)
    if seed == 1:  # a binary (bool) track and two sources merging into one target
        rolls["Alto"] = rolls["Alto"] > 0
        rolls["Alto 2"] = songkit.npz_roll(seed + 10, n_bars=6)["Alto"]
    if seed == 2:  # odd length, not a whole bar, notes near the edge of the pitch range
        rolls = {k: np.vstack([v, np.zeros((17, 128), np.uint8)]) for k, v in rolls.items()}
        rolls["Bass"][-20:, REP.lowest_pitch] = 50
        rolls["Bass"][-20:, REP.lowest_pitch - 1] = 50
    path = songkit.npz_song(tmp_path / "s.npz", rolls=rolls)
    params = songkit.params()
    fast, fast_dropped = npz_roll(path, params.tracks, REP)
    slow, slow_dropped = multitrack_roll(read_song(path, REP).multitrack, params.tracks, REP)
    assert fast.dtype == slow.dtype == bool
    assert np.array_equal(fast, slow) and fast_dropped == slow_dropped
    assert fast.any()


def test_cut_phrases_hop_and_empty_bars():
    params = songkit.params(**{"tensorize.hop_bars": 2, "tensorize.max_empty_bars": 1})
    s = REP.steps_per_bar
    roll = np.zeros((2, 10 * s, REP.n_pitches), bool)
    for bar in (0, 1, 2, 3, 6, 9):  # bars 4, 5, 7, 8 are silent in every track
        roll[bar % 2, bar * s, 10] = True
    phrases = cut_phrases(roll, REP, params.tensorize)
    # starts 0 (0 empty), 2 (4,5 empty: 2 > 1 skip), 4 (4,5,7: skip), 6 (7,8: skip)
    assert phrases.shape == (1, 2, REP.n_bars, s, REP.n_pitches)
    assert np.array_equal(phrases[0], roll[:, : 4 * s].reshape(2, 4, s, -1))
    loose = songkit.params(**{"tensorize.max_empty_bars": 4}).tensorize
    assert len(cut_phrases(roll, REP, loose)) == 4


def test_song_phrases_shape(tmp_path):
    params = songkit.params()
    path = songkit.midi_song(tmp_path / "m.mid", n_bars=10)
    phrases = song_phrases(path, params)
    assert phrases.shape == (4, 4, REP.n_bars, REP.steps_per_bar, REP.n_pitches)
    assert phrases.dtype == bool and phrases.any(axis=(0, 2, 3, 4)).all()


@pytest.mark.parametrize(("rel", "expected"), [
    ("files/a/Song.MID", "midi"), ("files/b.midi", "midi"), ("files/x.npz", "npz"),
    ("files/readme.txt", None), ("files/.hidden.mid", None), ("__MACOSX/._x.mid", None),
])
def test_song_format_names_songs_and_ignores_the_rest(rel, expected):
    assert song_format(rel) == expected


def test_read_song_refuses_unsupported_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a song")
    with pytest.raises(SongError) as err:
        read_song(path, REP)
    assert err.value.reason == "unsupported_format"
