"""Code phrases to notes, Multitrack, MIDI (round trip, repeated notes kept), PNG and WAV."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from lpdvae.data import roll
from lpdvae.data.codes import ONSET, SUSTAIN
from lpdvae.data.roll import midi_bytes, phrase_notes, plot_png, render_wav, write_midi
from lpdvae.params import RepresentationParams, TrackSpec

REP = RepresentationParams(source_resolution=4, beat_resolution=4, beats_per_bar=4, lowest_pitch=36,
                           n_pitches=48, n_bars=2)
TRACKS = [TrackSpec("melody", kind="monophonic", program=52, is_drum=False, names=(), programs=()),
          TrackSpec("drums", kind="drums", program=0, is_drum=True, names=(), programs=())]
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def note(track: np.ndarray, start: int, length: int, pitch: int) -> None:
    flat = track.reshape(-1, REP.n_pitches)
    flat[start : start + length, pitch - REP.lowest_pitch] = SUSTAIN
    flat[start, pitch - REP.lowest_pitch] = ONSET


def phrase() -> np.ndarray:
    """Two tracks, 2 bars of 16 steps: an E4, a C4 held over the barline and struck again right
    after (two notes, no gap), a kick on every beat."""
    x = np.zeros((2, REP.n_bars, REP.steps_per_bar, REP.n_pitches), dtype=np.uint8)
    note(x[0], 0, 4, 64)
    note(x[0], 12, 8, 60)
    note(x[0], 20, 4, 60)
    for step in range(0, 32, 4):
        note(x[1], step, 1, 36)
    return x


def test_phrase_notes_keep_repeated_notes_apart():
    notes = phrase_notes(phrase()[0])
    assert notes == [(0, 4, 64 - 36), (12, 20, 60 - 36), (20, 24, 60 - 36)]


def test_phrase_notes_read_a_note_cut_at_the_phrase_start():
    track = np.zeros((1, 4, 3), dtype=np.uint8)
    track[0, :2, 1] = SUSTAIN  # began before the phrase: no onset code
    assert phrase_notes(track) == [(0, 2, 1)]


def test_midi_takes_model_json_track_dicts_and_checks_track_count():
    dicts = [{"name": "melody", "program": 52, "is_drum": False}, {"name": "drums", "program": 0, "is_drum": True}]
    midi = pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(phrase(), dicts, REP)))
    assert [(i.name, i.program, i.is_drum) for i in midi.instruments] == [
        ("melody", 52, False), ("drums", 0, True)]
    with pytest.raises(ValueError, match="track"):
        midi_bytes(phrase(), TRACKS[:1], REP)


def read_notes(data: bytes, tempo: float = 100.0) -> list[list[tuple[int, int, int]]]:
    """(start step, end step, MIDI pitch) per instrument of a MIDI file."""
    step = 60.0 / tempo / REP.beat_resolution
    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    return [sorted((round(n.start / step), round(n.end / step), n.pitch) for n in inst.notes)
            for inst in pm.instruments]


def test_midi_round_trip_gives_back_every_note_including_repeated_ones(tmp_path):
    path = write_midi(phrase(), TRACKS, REP, tmp_path / "deep" / "x.mid")
    assert path.read_bytes()[:4] == b"MThd"
    assert [p.name for p in path.parent.iterdir()] == ["x.mid"]  # no temp file left behind
    pm = pretty_midi.PrettyMIDI(str(path))
    assert [(i.name, i.program, i.is_drum) for i in pm.instruments] == [("melody", 52, False), ("drums", 0, True)]
    melody, drums = read_notes(path.read_bytes())
    assert melody == [(0, 4, 64), (12, 20, 60), (20, 24, 60)]
    assert drums == [(s, s + 1, 36) for s in range(0, 32, 4)]


def test_midi_of_several_phrases_plays_them_one_after_another():
    melody = read_notes(midi_bytes(np.stack([phrase(), phrase()]), TRACKS, REP))[0]
    assert len(melody) == 6
    assert melody[3:] == [(s + 32, e + 32, p) for s, e, p in melody[:3]]


def test_png_has_one_panel_per_phrase(tmp_path):
    import matplotlib.image

    one = plot_png([("original", phrase())], TRACKS, REP, tmp_path / "one.png")
    two = plot_png([("original", phrase()), ("reconstruction", phrase())], TRACKS, REP, tmp_path / "two.png")
    assert two.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(two).shape[1] > matplotlib.image.imread(one).shape[1]
    silent = plot_png([("silence", np.zeros_like(phrase()))], TRACKS, REP, tmp_path / "silent.png")
    assert silent.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_keeps_three_digit_pitch_labels_inside_its_fixed_margins(tmp_path):
    import matplotlib.image

    high = RepresentationParams(source_resolution=4, beat_resolution=4, beats_per_bar=4, lowest_pitch=60,
                                n_pitches=48, n_bars=2)
    x = np.zeros((2, high.n_bars, high.steps_per_bar, high.n_pitches), dtype=np.uint8)
    x[0, 0, :, 47] = SUSTAIN  # pitch 107 at the top: labels up to 100
    x[0, 0, 0, 47] = ONSET
    image = matplotlib.image.imread(plot_png([("high", x)] * 2, TRACKS, high, tmp_path / "high.png"))
    ink = image[..., :3].sum(-1) < 2.5
    assert not ink[:, :2].any() and not ink[:, -2:].any()  # nothing cut at the left or right edge
    assert not ink[:2].any() and not ink[-2:].any()


def fake_fluidsynth(folder: Path, script: str, monkeypatch) -> None:
    """A `fluidsynth` on PATH that runs `script` (sh) instead of rendering."""
    exe = folder / "bin" / "fluidsynth"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}:{os.environ['PATH']}")


def test_a_failing_fluidsynth_gives_no_wav_and_a_warning_with_its_stderr(tmp_path, monkeypatch, caplog):
    fake_fluidsynth(tmp_path, 'echo "fluidsynth: error: bad soundfont" >&2; exit 3', monkeypatch)
    midi = write_midi(phrase(), TRACKS, REP, tmp_path / "x.mid")
    (tmp_path / "x.sf2").write_bytes(b"")
    assert not render_wav(midi, tmp_path / "x.wav", tmp_path / "x.sf2")
    assert "bad soundfont" in caplog.text and str(midi) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "x.mid", "x.sf2"]


def test_a_fluidsynth_past_the_timeout_gives_no_wav_and_a_warning(tmp_path, monkeypatch, caplog):
    fake_fluidsynth(tmp_path, 'while [ "$1" != -F ]; do shift; done; echo partial > "$2"; exec sleep 5', monkeypatch)
    monkeypatch.setattr(roll, "RENDER_TIMEOUT_S", 0.5)
    midi = write_midi(phrase(), TRACKS, REP, tmp_path / "x.mid")
    (tmp_path / "x.sf2").write_bytes(b"")
    assert not render_wav(midi, tmp_path / "x.wav", tmp_path / "x.sf2")
    assert "no WAV after 0.5 s" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "x.mid", "x.sf2"]  # no partial WAV


def test_wav_is_skipped_with_a_log_line_without_a_soundfont(tmp_path, caplog):
    midi = write_midi(phrase(), TRACKS, REP, tmp_path / "x.mid")
    with caplog.at_level(logging.INFO, logger="lpdvae.data.roll"):
        assert not render_wav(midi, tmp_path / "x.wav", tmp_path / "missing.sf2")
    assert not (tmp_path / "x.wav").exists()
    assert "not installed" in caplog.text


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.exists(),
                    reason="fluidsynth + fluid-soundfont-gm not installed")
def test_wav_renders_through_fluidsynth(tmp_path):
    midi = write_midi(phrase(), TRACKS, REP, tmp_path / "x.mid")
    assert render_wav(midi, tmp_path / "x.wav", SOUNDFONT)
    with wave.open(str(tmp_path / "x.wav")) as w:
        assert w.getnframes() / w.getframerate() > 1.0  # 8 beats at 100 bpm is ~4.8 s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mid", "x.wav"]


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.exists(),
                    reason="fluidsynth + fluid-soundfont-gm not installed")
def test_wav_sounds_as_fluidsynth_renders_it_with_the_whole_soundfont_loaded(tmp_path):
    """render_wav loads only the samples the MIDI plays (half its time). The demo's choir renders
    byte for byte the same; with a drum kit, a few samples differ by a few steps of 32767."""
    midi = write_midi(phrase(), TRACKS, REP, tmp_path / "x.mid")
    assert render_wav(midi, tmp_path / "x.wav", SOUNDFONT)
    subprocess.run(["fluidsynth", "-ni", "-q", "-F", str(tmp_path / "full.wav"), "-r", "22050",
                    str(SOUNDFONT), str(midi)], check=True, capture_output=True)
    frames = []
    for name in ("x.wav", "full.wav"):
        with wave.open(str(tmp_path / name)) as w:
            frames.append(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(int))
    assert frames[0].shape == frames[1].shape
    assert np.abs(frames[0] - frames[1]).max() <= 8
