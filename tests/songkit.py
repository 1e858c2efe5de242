"""Tiny song corpora for the data-path tests: real MIDI (pretty_midi) and LPD-style `.npz`
(pypianoroll) files in the ingest layout (`files/…` + `manifest.jsonl`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import pypianoroll

from lpdvae.io import sha256_file
from lpdvae.params import Params, load_params

REPO = Path(__file__).resolve().parents[1]
VOICES = {"Soprano": (67, 79), "Alto": (60, 72), "Tenor": (52, 64), "Bass": (40, 52)}


def params(**overrides: Any) -> Params:
    """The project's params (4 chorale voices) with small shards and the given dotted overrides."""
    base = {"tensorize.shard_size": 16, "tensorize.workers": 1}
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_params(REPO / "params.yaml", base)


def midi_song(path: Path, seed: int = 0, n_bars: int = 8, numerator: int = 4, tempo: float = 100.0,
              voices: dict[str, tuple[int, int]] | None = None) -> Path:
    """Four voices of quarter notes (one eighth rest per bar) for `n_bars` bars of numerator/4."""
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(numerator, 4, 0.0))
    beat = 60.0 / tempo
    for name, (lo, hi) in (voices or VOICES).items():
        inst = pretty_midi.Instrument(program=52, name=name)
        for b in range(n_bars * numerator):
            pitch = int(rng.integers(lo, hi))
            inst.notes.append(pretty_midi.Note(int(rng.integers(50, 110)), pitch, b * beat, (b + 0.75) * beat))
        pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def npz_roll(seed: int, n_bars: int = 8, resolution: int = 24) -> dict[str, np.ndarray]:
    """{voice: uint8 roll [steps, 128]} of random chords, a few held notes per beat."""
    rng = np.random.default_rng(seed)
    steps = n_bars * 4 * resolution
    rolls = {}
    for name, (lo, hi) in VOICES.items():
        roll = np.zeros((steps, 128), dtype=np.uint8)
        for beat in range(n_bars * 4):
            start = beat * resolution + int(rng.integers(0, resolution // 2))
            roll[start : start + int(rng.integers(2, resolution)), int(rng.integers(lo, hi))] = rng.integers(30, 127)
        rolls[name] = roll
    return rolls


def npz_song(path: Path, seed: int = 0, n_bars: int = 8, rolls: dict[str, np.ndarray] | None = None,
             resolution: int = 24, name: str | None = None) -> Path:
    """An LPD-style npz; `name`: the multitrack's name (its title; default the file stem)."""
    rolls = rolls if rolls is not None else npz_roll(seed, n_bars, resolution)
    steps = next(iter(rolls.values())).shape[0]
    tracks = []
    for voice, roll in rolls.items():
        cls = pypianoroll.StandardTrack if roll.dtype == np.uint8 else pypianoroll.Track
        tracks.append(cls(name=voice, program=52, is_drum=False, pianoroll=roll))
    downbeat = np.zeros(steps, dtype=bool)
    downbeat[:: 4 * resolution] = True
    mt = pypianoroll.Multitrack(name=path.stem if name is None else name, resolution=resolution, tempo=np.full(steps, 100.0),
                                downbeat=downbeat, tracks=tracks)
    path.parent.mkdir(parents=True, exist_ok=True)
    pypianoroll.save(path, mt)
    return pin_zip_times(path)


def pin_zip_times(path: Path) -> Path:
    """Rewrite an npz (a zip) with every member dated 1980-01-01: numpy stamps the time of
    writing, so the same song written a minute later would get another sha256 (its song id),
    and with it another split."""
    with zipfile.ZipFile(path) as z:
        members = [(name, z.read(name)) for name in z.namelist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED)
    return path


def write_manifest(raw_dir: Path) -> list[dict[str, Any]]:
    """The ingest step's manifest for every file under raw_dir/files."""
    rows = []
    for path in sorted((raw_dir / "files").rglob("*")):
        if path.is_file():
            rel = path.relative_to(raw_dir).as_posix()
            rows.append({"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size,
                         "source": "test://songkit", "format": "npz" if path.suffix == ".npz" else "midi"})
    rows.sort(key=lambda r: r["path"])
    (raw_dir / "manifest.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


def good_corpus(raw_dir: Path, n_midi: int = 3, n_npz: int = 3, seed0: int = 0) -> list[dict[str, Any]]:
    for i in range(n_midi):
        midi_song(raw_dir / "files" / f"midi/song{seed0 + i:03d}.mid", seed=seed0 + i)
    for i in range(n_npz):
        npz_song(raw_dir / "files" / f"npz/song{seed0 + i:03d}.npz", seed=1000 + seed0 + i)
    return write_manifest(raw_dir)


BAD_REASONS = {
    "bad/truncated.npz": "corrupt_npz",
    "bad/wrong_keys.npz": "npz_missing_keys",
    "bad/garbage.mid": "corrupt_midi",
    "bad/empty.mid": "empty_file",
    "bad/waltz.mid": "time_signature",
    "bad/nan.npz": "nan_values",
    "bad/loud.npz": "velocity_out_of_range",
    # memory bombs: tiny files declaring huge songs, refused before any roll is allocated
    "bad/long_note.mid": "too_long",     # one 400,000-beat note (tpq 4: within pretty_midi's tick limit)
    "bad/long_ticks.mid": "too_long",    # the same note at tpq 480: past pretty_midi's tick limit
    "bad/long_shape.npz": "too_long",    # an npz declaring 2e7 steps
}


def add_bad_songs(raw_dir: Path) -> list[dict[str, Any]]:
    """One file per failure kind in BAD_REASONS (keys are paths under files/)."""
    files = raw_dir / "files"
    (files / "bad").mkdir(parents=True, exist_ok=True)
    good = npz_song(files / "bad/tmp.npz", seed=77)
    data = good.read_bytes()
    (files / "bad/truncated.npz").write_bytes(data[: len(data) // 2])
    good.unlink()
    np.savez(files / "bad/wrong_keys.npz", notes=np.arange(10), velocity=np.ones(10))
    (files / "bad/garbage.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage, not a MIDI file" * 3)
    (files / "bad/empty.mid").write_bytes(b"")
    midi_song(files / "bad/waltz.mid", seed=5, numerator=3)
    rolls = npz_roll(88)
    rolls["Alto"] = rolls["Alto"].astype(np.float32)
    rolls["Alto"][10:20, 60] = np.nan
    npz_song(files / "bad/nan.npz", rolls=rolls)
    rolls = npz_roll(99)
    rolls["Tenor"][rolls["Tenor"] > 0] = 200
    npz_song(files / "bad/loud.npz", rolls=rolls)
    long_note_midi(files / "bad/long_note.mid", beats=400_000, tpq=4)
    long_note_midi(files / "bad/long_ticks.mid", beats=400_000, tpq=480)
    long_shape_npz(files / "bad/long_shape.npz", steps=20_000_000)
    return write_manifest(raw_dir)


def long_note_midi(path: Path, beats: int, tpq: int) -> Path:
    """A ~100-byte MIDI file holding one note `beats` beats long."""
    import mido

    track = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
                            mido.Message("note_on", note=60, velocity=80, time=0),
                            mido.Message("note_off", note=60, velocity=0, time=beats * tpq)])
    mid = mido.MidiFile(ticks_per_beat=tpq)
    mid.tracks.append(track)
    mid.save(str(path))
    return path


def long_shape_npz(path: Path, steps: int) -> Path:
    """A small LPD-style npz whose first track declares `steps` time steps (a few KB on disk)."""
    small = npz_song(path.with_name(f"{path.stem}.tmp.npz"), seed=3, n_bars=1)
    with np.load(small) as z:
        arrays = {k: z[k] for k in z.files}
    small.unlink()
    arrays["pianoroll_0_csc_shape"] = np.array([steps, 128])
    np.savez_compressed(path, **arrays)
    return pin_zip_times(path)


def is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)
