"""Song loading, track merging, rolls and phrases; symusic parses to the same rolls as pypianoroll."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pypianoroll
import pytest

from lpdvae.data.music.grid import ONSET, SUSTAIN, multitrack_roll, npz_roll, song_roll
from lpdvae.data.music.load import read_song
from lpdvae.data.music.midi import symusic_pretty_midi
from lpdvae.data.music.phrases import cut_phrases, song_phrases
from lpdvae.data.music.song import SongError, song_format
from lpdvae.data.music.tracks import assign_track, track_assignment, track_routing
from lpdvae.io import atomic_write_jsonl, read_jsonl
from lpdvae.params import TrackSpec
from tests import songkit

REP = songkit.params().representation
MAX_BEATS = songkit.params().validate.max_song_beats


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
    song = read_song(path, REP, max_beats=MAX_BEATS)
    assert song.parser == "symusic"


def test_chorale_style_midi_identical_and_loaded_with_symusic(tmp_path):
    pytest.importorskip("symusic")
    path = songkit.midi_song(tmp_path / "c.mid", seed=3)
    song = read_song(path, REP, max_beats=MAX_BEATS)
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
    song = read_song(path, REP, max_beats=MAX_BEATS)
    assert song.parser == "pretty_midi"
    assert _track_key(song.multitrack) == _track_key(_reference(path))


@pytest.mark.parametrize("name", sorted(songkit.BAD_REASONS))
def test_unreadable_files_raise_song_error_with_reason(tmp_path, name):
    songkit.add_bad_songs(tmp_path)
    path = tmp_path / "files" / name
    reason = songkit.BAD_REASONS[name]
    if reason in ("time_signature", "nan_values", "velocity_out_of_range"):  # readable: GX judges these
        song = read_song(path, REP, max_beats=MAX_BEATS)
        assert song.time_signature == "3/4" if reason == "time_signature" else song.format == "npz"
        return
    with pytest.raises(SongError) as err:
        read_song(path, REP, max_beats=MAX_BEATS)
    assert err.value.reason == reason
    assert str(path) in str(err.value)


def test_velocity_and_nan_reported_by_loader(tmp_path):
    songkit.add_bad_songs(tmp_path)
    loud = read_song(tmp_path / "files/bad/loud.npz", REP, max_beats=MAX_BEATS)
    assert loud.max_velocity == 200
    nan = read_song(tmp_path / "files/bad/nan.npz", REP, max_beats=MAX_BEATS)
    assert any(np.isnan(t.pianoroll).any() for t in nan.multitrack.tracks if t.pianoroll.dtype.kind == "f")


def test_time_signatures(tmp_path):
    plain = mido.MidiFile(ticks_per_beat=96)  # no time signature event (pretty_midi would add 4/4)
    plain.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=80, time=0),
                                        mido.Message("note_off", note=60, velocity=0, time=384)]))
    plain.save(str(tmp_path / "plain.mid"))
    assert read_song(tmp_path / "plain.mid", REP, max_beats=MAX_BEATS).time_signature_source == "midi-default"
    mixed = _crafted_midi(tmp_path / "mixed.mid", 1, meter_change=True)
    assert read_song(mixed, REP, max_beats=MAX_BEATS).time_signature == "mixed(4/4,3/4)"
    npz = songkit.npz_song(tmp_path / "a.npz", seed=1)
    song = read_song(npz, REP, max_beats=MAX_BEATS)
    assert (song.time_signature, song.time_signature_source) == ("4/4", "downbeat")


TRACKS = (
    TrackSpec("drums", kind="drums", program=0, is_drum=True, names=("drum",), programs=()),
    TrackSpec("piano", kind="polyphonic", program=0, is_drum=False, names=("piano", "keys"),
              programs=tuple(range(8))),
    TrackSpec("bass", kind="monophonic", program=32, is_drum=False, names=("bass",),
              programs=tuple(range(32, 40))),
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
    q = REP.beat_resolution  # a quarter note (24 source steps) is q steps
    assert roll[1, 0:q, 60 - REP.lowest_pitch].all() and roll[1, 2 * q:3 * q, 64 - REP.lowest_pitch].all()
    # a quarter note stays q steps long at q per beat (floor, not round, when downsampling)
    assert (roll[1] > 0).sum() == 2 * q and not roll[0].any() and not roll[2].any()
    # run starts of each source track are the onsets (a bare Multitrack carries no note starts)
    assert list(zip(*np.nonzero(roll[1] == ONSET), strict=True)) == [(0, 60 - REP.lowest_pitch),
                                                                      (2 * q, 64 - REP.lowest_pitch)]


def test_track_routing_names_where_each_source_track_went():
    """Four madrigal voices on a piano program merge into LPD-style piano; a flute is dropped."""
    roll = np.zeros((96, 128), np.uint8)
    voices = [pypianoroll.StandardTrack(name=n, program=0, pianoroll=roll) for n in ("Cantus", "Altus", "Tenor", "")]
    mt = pypianoroll.Multitrack(resolution=24, tracks=[
        *voices, pypianoroll.StandardTrack(name="Flute", program=73, pianoroll=roll),
        pypianoroll.StandardTrack(name="Fretless", program=35, pianoroll=roll)])
    routing = track_routing([t.name for t in mt.tracks], track_assignment(mt, TRACKS), TRACKS)
    assert routing == {
        "track_map": "Cantus->piano|Altus->piano|Tenor->piano|#3->piano|Flute->(dropped)|Fretless->bass",
        "dropped_tracks": "Flute",
        "merged_tracks": "piano<-Cantus+Altus+Tenor+#3",
        "n_merged_tracks": 4,
    }


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
    slow, slow_dropped = song_roll(read_song(path, REP, max_beats=MAX_BEATS), params.tracks, REP)
    assert fast.dtype == slow.dtype == np.uint8
    assert np.array_equal(fast, slow) and fast_dropped == slow_dropped
    assert fast.any()


def test_cut_phrases_hop_and_empty_bars():
    params = songkit.params(**{"tensorize.hop_bars": 2, "tensorize.max_empty_bars": 1})
    s = REP.steps_per_bar
    roll = np.zeros((2, 10 * s, REP.n_pitches), np.uint8)
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
    assert phrases.dtype == np.uint8 and phrases.any(axis=(0, 2, 3, 4)).all()


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
        read_song(path, REP, max_beats=MAX_BEATS)
    assert err.value.reason == "unsupported_format"


# ------------------------------------------------------------------------------ note onsets


def _midi_notes(path: Path, notes: list[tuple[int, int, int]], tpq: int = 96, name: str = "soprano") -> Path:
    """One named track of (start tick, end tick, pitch) notes in 4/4 at 120 bpm."""
    events = sorted([(s, 1, p) for s, _, p in notes] + [(e, 0, p) for _, e, p in notes])
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0),
                            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0)])
    now = 0
    for tick, on, pitch in events:
        track.append(mido.Message("note_on" if on else "note_off", note=pitch, velocity=80 if on else 0,
                                  time=tick - now))
        now = tick
    mid = mido.MidiFile(ticks_per_beat=tpq)
    mid.tracks.append(track)
    mid.save(str(path))
    return path


def test_repeated_same_pitch_notes_keep_two_onsets(tmp_path):
    params = songkit.params()
    # two quarter notes of G4, back to back, then a half note of A4
    path = _midi_notes(tmp_path / "repeat.mid", [(0, 96, 67), (96, 192, 67), (192, 384, 69)])
    roll, _ = song_roll(read_song(path, REP, max_beats=MAX_BEATS), params.tracks, REP)
    g, a = 67 - REP.lowest_pitch, 69 - REP.lowest_pitch
    per_beat = REP.beat_resolution
    assert list(np.flatnonzero(roll[0, :, g] == ONSET)) == [0, per_beat]
    assert (roll[0, : 2 * per_beat, g] > 0).all() and (roll[0, 1:per_beat, g] == SUSTAIN).all()
    assert list(np.flatnonzero(roll[0, :, a] == ONSET)) == [2 * per_beat]
    assert roll.dtype == np.uint8 and set(np.unique(roll)) == {0, SUSTAIN, ONSET}


def test_npz_onsets_are_run_starts(tmp_path):
    params = songkit.params()
    res = REP.source_resolution
    roll = np.zeros((4 * 4 * res, 128), np.uint8)
    roll[0:res, 60] = 90             # one quarter note
    roll[res : 2 * res, 60] = 90     # held on without a gap: the same run, no new onset (LPD has none)
    roll[3 * res : 4 * res, 60] = 90  # after a rest: a new onset
    roll[res // 2 : res, 62] = 70    # starts between two grid steps of the source
    path = songkit.npz_song(tmp_path / "s.npz", rolls={"Soprano": roll})
    fast, _ = npz_roll(path, params.tracks, REP)
    slow, _ = song_roll(read_song(path, REP, max_beats=MAX_BEATS), params.tracks, REP)
    assert np.array_equal(fast, slow)
    step = REP.beat_resolution
    assert list(np.flatnonzero(fast[0, :, 60 - REP.lowest_pitch] == ONSET)) == [0, 3 * step]
    assert list(np.flatnonzero(fast[0, :, 62 - REP.lowest_pitch] == ONSET)) == [step // 2]
    assert (fast[0, : 2 * step, 60 - REP.lowest_pitch] > 0).all()


@pytest.mark.parametrize("seed", range(3))
def test_midi_onsets_match_pypianoroll_note_starts(tmp_path, seed):
    """The onsets `read_song` computes are where pypianoroll's own onset roll puts note starts."""
    path = _crafted_midi(tmp_path / "x.mid", seed)
    song = read_song(path, REP, max_beats=MAX_BEATS)
    with np.errstate(all="ignore"):
        ref = pypianoroll.read(path, resolution=REP.source_resolution, collect_onsets_only=True)
    for onsets, track in zip(song.onsets, ref.tracks, strict=True):
        assert sorted(map(tuple, onsets.tolist())) == sorted(map(tuple, np.argwhere(track.pianoroll).tolist()))


def test_demo_chorales_round_trip_onsets_at_4_steps_per_beat(tmp_path):
    """Every note onset of the demo chorales is on the 16th grid: one onset cell per note at
    4 steps per beat, and the cell's step / 4 is the note's start in beats."""
    pytest.importorskip("music21")
    import pretty_midi

    from lpdvae.data import demo

    params = songkit.params(**{"representation.beat_resolution": 4})
    rep = params.representation
    paths = []
    for source in demo.chorale_paths()[:16]:
        data = demo.render_chorale(source)
        if data is not None:
            paths.append(tmp_path / demo.midi_name(source))
            paths[-1].write_bytes(data)
        if len(paths) == 6:
            break
    n_notes = n_repeats = n_cells = 0
    for path in paths:
        pm = pretty_midi.PrettyMIDI(str(path))
        roll, _ = song_roll(read_song(path, rep, max_beats=MAX_BEATS), params.tracks, rep)
        expected = set()
        for inst in pm.instruments:
            k = params.track_names.index(inst.name.lower())
            notes = sorted(inst.notes, key=lambda n: n.start)
            for prev, note in zip([None, *notes[:-1]], notes, strict=True):
                beats = pm.time_to_tick(note.start) / pm.resolution
                assert (beats * rep.beat_resolution).is_integer(), (path.name, inst.name, beats)
                expected.add((k, int(beats * rep.beat_resolution), note.pitch - rep.lowest_pitch))
                n_repeats += prev is not None and prev.pitch == note.pitch and \
                    pm.time_to_tick(prev.end) == pm.time_to_tick(note.start)
            n_notes += len(notes)
        cells = {tuple(c) for c in np.argwhere(roll == ONSET).tolist()}
        assert cells == expected, path.name
        n_cells += len(cells)
        assert {(k, s / rep.beat_resolution, p) for k, s, p in cells} == \
            {(k, s / rep.beat_resolution, p) for k, s, p in expected}
    assert len(paths) == 6 and n_cells == n_notes  # no two notes share a cell: none is lost
    print(f"demo round trip: {len(paths)} chorales, {n_notes} notes, {n_repeats} repeats "
          f"({n_repeats / n_notes:.1%} of notes)")


# ------------------------------------------------------------------------------ memory bounds

_PEAK_RSS = """
import json, resource, sys
import json
from pathlib import Path
from lpdvae.data.music.load import read_song
from lpdvae.data.music.phrases import song_phrases
from lpdvae.data.music.song import SongError
from tests import songkit

params = songkit.params()
rep, limit = params.representation, params.validate.max_song_beats
files = Path(sys.argv[1]) / "files"
song_phrases(files / "midi/song000.mid", params)  # warm up: every module and code path loaded
song_phrases(files / "npz/song000.npz", params)
peak = {"baseline": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
for name in sys.argv[2:]:
    for read in (lambda p: read_song(p, rep, max_beats=limit), lambda p: song_phrases(p, params)):
        try:
            read(files / name)
            reason = None
        except SongError as exc:
            reason = exc.reason
        peak[name] = [reason, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]
print(json.dumps(peak))
"""


def test_memory_bombs_refused_before_allocating(tmp_path):
    """A 44-byte MIDI with one 400,000-beat note and a 5 KB npz declaring 2e7 steps are refused
    (`too_long`) by read_song and by tensorize's path, with no measurable growth of peak RSS
    (the dense rolls would take 2.4 GB and 2.6 GB)."""
    import subprocess
    import sys

    songkit.good_corpus(tmp_path, n_midi=1, n_npz=1)
    songkit.add_bad_songs(tmp_path)
    names = ["bad/long_note.mid", "bad/long_ticks.mid", "bad/long_shape.npz"]
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(tmp_path), *names], check=True,
                         capture_output=True, text=True, cwd=songkit.REPO).stdout
    peak = json.loads(out.splitlines()[-1])
    for name in names:
        reason, rss_kib = peak[name]
        assert reason == "too_long", name
        assert rss_kib - peak["baseline"] < 64 * 1024, (name, rss_kib, peak["baseline"])
    print("peak RSS KiB:", peak)


# The address-space bound the data steps must run under: a Python process with pandas, pyarrow
# and Great Expectations loaded (2 GiB: room above what validate needs, for more threads' arenas
# on bigger machines) plus what one song at the params' length limit may take
# (validate.max_song_beats x source_resolution x 128 pitches x 8 bytes, params.yaml's estimate).
# Without the size guard, reading long_note.mid needs far more, even at pretty_midi's tick limit
# (the measurements: docs/decisions.md).
PROCESS_BASE_BYTES = 2 << 30
BOMBS = {"bad/long_note.mid", "bad/long_ticks.mid", "bad/long_shape.npz"}


def memory_bound(params) -> int:
    rep = params.representation
    return PROCESS_BASE_BYTES + params.validate.max_song_beats * rep.source_resolution * 128 * 8


def under_memory_bound(argv: list[str], params) -> subprocess.CompletedProcess:
    """`prlimit --as=<memory_bound(params)> python -m lpdvae ARGV` (one worker: the bound is per process)."""
    cmd = ["prlimit", f"--as={memory_bound(params)}", sys.executable, "-m", "lpdvae",
           "--set", "tensorize.workers=1", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=songkit.REPO, timeout=600)


@pytest.fixture(scope="module")
def bomb_corpus(tmp_path_factory):
    raw = tmp_path_factory.mktemp("bombs") / "raw"
    songkit.good_corpus(raw, n_midi=2, n_npz=2)
    songkit.add_bad_songs(raw)
    return raw


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_validate_under_the_memory_bound_quarantines_the_bombs_as_too_long(bomb_corpus, tmp_path):
    proc = under_memory_bound(["--set", "validate.max_bad_fraction=1", "validate", "--raw", str(bomb_corpus),
                               "--out", str(tmp_path / "validated")], songkit.params())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MemoryError" not in proc.stderr and "Unable to allocate" not in proc.stderr
    reasons = {r["path"]: r["reason"] for r in read_jsonl(tmp_path / "validated/quarantine.jsonl")}
    assert {p: reasons[f"files/{p}"] for p in BOMBS} == dict.fromkeys(BOMBS, "too_long")


def ids_in(split: str, n: int, params, prefix: str) -> list[str]:
    """`n` song ids the split hash puts into `split`."""
    from lpdvae.steps.tensorize import split_of

    found = (f"{prefix}-{k}" for k in range(10_000))
    return [i for i in found if split_of(i, params) == split][:n]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_tensorize_under_the_memory_bound_skips_the_bombs_as_too_long(bomb_corpus, tmp_path):
    """As if validate had accepted the bombs (a validated folder from other params): tensorize's
    own reader refuses them from their declared sizes too."""
    params = songkit.params()
    manifest = {r["path"]: r for r in read_jsonl(bomb_corpus / "manifest.jsonl")}
    good = sorted(p for p in manifest if p.startswith(("files/midi/", "files/npz/")))
    ids = ids_in("train", 2 + len(BOMBS), params, "t") + ids_in("val", 1, params, "v") + ids_in("test", 1, params, "e")
    paths = good[:2] + [f"files/{b}" for b in sorted(BOMBS)] + good[2:]
    rows = [{"song_id": i, "path": p, "sha256": manifest[p]["sha256"]} for i, p in zip(ids, paths, strict=True)]
    atomic_write_jsonl(tmp_path / "validated/accepted.jsonl", rows)
    proc = under_memory_bound(["tensorize", "--raw", str(bomb_corpus), "--validated", str(tmp_path / "validated"),
                               "--out", str(tmp_path / "tensors")], params)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MemoryError" not in proc.stderr and "Unable to allocate" not in proc.stderr
    assert "3 songs could not be read" in proc.stdout
    for bomb in BOMBS:
        assert f"files/{bomb}: skipped (too_long: " in proc.stderr, bomb
