"""A synthetic LPD-5-like corpus: pypianoroll `.npz` multitracks (Drums, Piano, Guitar, Bass,
Strings; resolution 24, 4/4 downbeats) with note densities close to LPD-5 cleansed, laid out
as the ingest step writes it (`files/…` + `manifest.jsonl`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pypianoroll

from lpdvae.io import sha256_file

RESOLUTION = 24
BAR = 4 * RESOLUTION
LPD5 = [("Drums", 0, True), ("Piano", 0, False), ("Guitar", 24, False), ("Bass", 32, False),
        ("Strings", 48, False)]
LPD5_TRACKS = [
    {"name": "drums", "kind": "drums", "program": 0, "is_drum": True, "names": ["drum"], "programs": []},
    {"name": "piano", "kind": "polyphonic", "program": 0, "is_drum": False, "names": ["piano"], "programs": list(range(8))},
    {"name": "guitar", "kind": "polyphonic", "program": 24, "is_drum": False, "names": ["guitar"], "programs": list(range(24, 32))},
    {"name": "bass", "kind": "monophonic", "program": 32, "is_drum": False, "names": ["bass"], "programs": list(range(32, 40))},
    {"name": "strings", "kind": "polyphonic", "program": 48, "is_drum": False, "names": ["string"], "programs": list(range(40, 56))},
]


def _notes(rng: np.random.Generator, kind: str, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, duration, pitch) arrays of one track's notes."""
    if kind == "Drums":  # kick/snare/hat on eighths, short hits
        starts = np.arange(0, n_steps, RESOLUTION // 2)
        starts = np.repeat(starts, 2)
        pitch = rng.choice([36, 38, 42, 46, 49], size=len(starts))
        return starts, np.full(len(starts), 2), pitch
    step, voices, lo, hi = {"Piano": (BAR // 2, 4, 48, 84), "Guitar": (RESOLUTION, 3, 45, 76),
                            "Bass": (RESOLUTION, 1, 28, 52), "Strings": (BAR, 3, 55, 88)}[kind]
    onsets = np.arange(0, n_steps, step)
    root = rng.integers(lo, hi - 12, size=len(onsets))
    chord = np.array([0, 4, 7, 12])[:voices]
    starts = np.repeat(onsets, voices)
    pitch = (root[:, None] + chord[None, :]).reshape(-1)
    dur = np.repeat(rng.integers(step // 2, step + 1, size=len(onsets)), voices)
    return starts, dur, pitch


def synth_song(seed: int) -> pypianoroll.Multitrack:
    rng = np.random.default_rng(seed)
    n_bars = int(rng.integers(40, 120))
    n_steps = n_bars * BAR
    tracks = []
    for name, program, is_drum in LPD5:
        roll = np.zeros((n_steps, 128), dtype=np.uint8)
        if rng.random() > 0.15:  # some songs lack a track (an empty roll, as in LPD-5)
            starts, dur, pitch = _notes(rng, name, n_steps)
            silent = rng.random(n_bars) < 0.1  # ~10% of bars rest in this track
            keep = ~silent[np.minimum(starts // BAR, n_bars - 1)]
            edges = np.zeros((128, n_steps + 1), dtype=np.int32)  # +1 at note on, -1 at note off
            np.add.at(edges, (pitch[keep], starts[keep]), 1)
            np.add.at(edges, (pitch[keep], np.minimum(starts[keep] + dur[keep], n_steps)), -1)
            active = np.cumsum(edges, axis=1)[:, :n_steps].T > 0
            roll[active] = rng.integers(40, 127, size=int(active.sum()), dtype=np.uint8)
        tracks.append(pypianoroll.StandardTrack(name=name, program=program, is_drum=is_drum, pianoroll=roll))
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
