"""Phrase tensors to Multitrack, MIDI (round trip), PNG and WAV."""

from __future__ import annotations

import logging
import shutil
import wave
from pathlib import Path

import numpy as np
import pypianoroll
import pytest

from lpdvae.params import RepresentationParams, TrackSpec
from lpdvae.roll import plot_png, render_wav, to_multitrack, write_midi

REP = RepresentationParams(beat_resolution=4, beats_per_bar=4, lowest_pitch=36, n_pitches=48, n_bars=2)
TRACKS = [TrackSpec("melody", program=52), TrackSpec("drums", program=0, is_drum=True)]
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def phrase() -> np.ndarray:
    """Two tracks, 2 bars of 16 steps: a held C4 over the barline, an E4, a kick on every beat."""
    x = np.zeros((2, REP.n_bars, REP.steps_per_bar, REP.n_pitches), dtype=np.uint8)
    melody = x[0].reshape(-1, REP.n_pitches)
    melody[12:20, 60 - REP.lowest_pitch] = 1
    melody[0:4, 64 - REP.lowest_pitch] = 1
    x[1].reshape(-1, REP.n_pitches)[::4, 36 - REP.lowest_pitch] = 1
    return x


def test_to_multitrack_places_pitches_and_keeps_track_specs():
    mt = to_multitrack(phrase(), TRACKS, REP, tempo=120.0)
    assert mt.resolution == 4
    assert [t.name for t in mt.tracks] == ["melody", "drums"]
    assert [t.is_drum for t in mt.tracks] == [False, True]
    assert mt.tracks[0].pianoroll.shape == (32, 128)
    assert set(np.flatnonzero(mt.tracks[0].pianoroll.any(0))) == {60, 64}
    assert list(np.flatnonzero(mt.downbeat)) == [0, 16]
    assert np.all(mt.tempo == 120.0)


def test_to_multitrack_accepts_model_json_track_dicts_and_checks_track_count():
    dicts = [{"name": "melody", "program": 52, "is_drum": False}, {"name": "drums", "program": 0, "is_drum": True}]
    assert [t.program for t in to_multitrack(phrase(), dicts, REP).tracks] == [52, 0]
    with pytest.raises(ValueError, match="track"):
        to_multitrack(phrase(), TRACKS[:1], REP)


def test_midi_round_trip_gives_back_the_phrase(tmp_path):
    path = write_midi(to_multitrack(phrase(), TRACKS, REP), tmp_path / "deep" / "x.mid")
    assert path.read_bytes()[:4] == b"MThd"
    assert [p.name for p in path.parent.iterdir()] == ["x.mid"]  # no temp file left behind
    back = pypianoroll.read(path, resolution=REP.beat_resolution)
    assert [t.name for t in back.tracks] == ["melody", "drums"]
    for k, track in enumerate(back.tracks):
        roll = track.pianoroll[:32, REP.lowest_pitch : REP.lowest_pitch + REP.n_pitches] > 0
        np.testing.assert_array_equal(roll, phrase()[k].reshape(32, -1).astype(bool))


def test_png_stacks_one_panel_per_track(tmp_path):
    import matplotlib.image

    one = plot_png(to_multitrack(phrase()[:1], TRACKS[:1], REP), tmp_path / "one.png")
    two = plot_png(to_multitrack(phrase(), TRACKS, REP), tmp_path / "two.png")
    assert two.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(two).shape[0] > matplotlib.image.imread(one).shape[0]


def test_wav_is_skipped_with_a_log_line_without_a_soundfont(tmp_path, caplog):
    midi = write_midi(to_multitrack(phrase(), TRACKS, REP), tmp_path / "x.mid")
    with caplog.at_level(logging.INFO, logger="lpdvae.roll"):
        assert not render_wav(midi, tmp_path / "x.wav", tmp_path / "missing.sf2")
    assert not (tmp_path / "x.wav").exists()
    assert "not installed" in caplog.text


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.exists(),
                    reason="fluidsynth + fluid-soundfont-gm not installed")
def test_wav_renders_through_fluidsynth(tmp_path):
    midi = write_midi(to_multitrack(phrase(), TRACKS, REP), tmp_path / "x.mid")
    assert render_wav(midi, tmp_path / "x.wav", SOUNDFONT)
    with wave.open(str(tmp_path / "x.wav")) as w:
        assert w.getnframes() / w.getframerate() > 1.0  # 8 beats at 100 bpm is ~4.8 s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mid", "x.wav"]
