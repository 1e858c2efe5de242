"""MIDI to piano roll: pretty_midi's parser (what `pypianoroll.read` uses) vs symusic.

Both paths end in the same `pypianoroll.from_pretty_midi` quantization; symusic replaces the
pure-Python mido/pretty_midi parsing (see `lpdvae.data.music.midi.symusic_pretty_midi`). The corpus is
generated here: multi-track type-1 MIDI files (4 parts + drums, tempo changes, several
ticks-per-quarter values, LPD-sized songs), plus chorale-style files from tests' generator.
Reports parse-only and parse+quantize times and how many rolls are identical.

    python -m benchmarks.midi_parse_bench [--songs 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pypianoroll

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "midi_parse.json"


def write_song(path: Path, seed: int) -> None:
    """A 3-5 minute multi-track song: chords, bass, melody, drums, a few tempo changes."""
    rng = np.random.default_rng(seed)
    tpq = int(rng.choice([96, 192, 384, 480, 960]))
    mid = mido.MidiFile(ticks_per_beat=tpq)
    n_beats = int(rng.integers(360, 640))
    meta = mido.MidiTrack()
    mid.tracks.append(meta)
    events = [(0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
              (0, mido.MetaMessage("set_tempo", tempo=int(rng.integers(400_000, 700_000))))]
    events += [(int(rng.integers(1, n_beats)) * tpq, mido.MetaMessage("set_tempo", tempo=int(rng.integers(400_000, 700_000))))
               for _ in range(int(rng.integers(0, 4)))]
    _write_events(meta, events)
    parts = [(0, 0, 48, 84, 1, 3), (1, 25, 40, 76, 1, 2), (2, 33, 28, 52, 1, 1), (3, 73, 60, 96, 2, 1), (9, 0, 35, 60, 2, 2)]
    for channel, program, lo, hi, per_beat, voices in parts:
        track = mido.MidiTrack()
        mid.tracks.append(track)
        events = [(0, mido.MetaMessage("track_name", name=f"part {channel}"))]
        if channel != 9:
            events.append((0, mido.Message("program_change", channel=channel, program=program)))
        step = tpq // per_beat
        for k in range(n_beats * per_beat):
            # distinct pitches per step: same-pitch overlaps would make symusic defer to pretty_midi
            for pitch in (lo + rng.choice(hi - lo, voices, replace=False)).tolist():
                start = k * step
                end = start + (step // 4 if channel == 9 else int(rng.integers(step // 2, step)))
                events.append((start, mido.Message("note_on", channel=channel, note=pitch, velocity=int(rng.integers(40, 120)))))
                events.append((end, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
        _write_events(track, events)
    mid.save(str(path))


def _write_events(track: mido.MidiTrack, events: list) -> None:
    last = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        track.append(msg.copy(time=tick - last))
        last = tick


def _key(mt: pypianoroll.Multitrack) -> list:
    return sorted((t.name, int(t.program), bool(t.is_drum), t.pianoroll.shape, t.pianoroll.tobytes()) for t in mt.tracks)


def symusic_native(path: Path, resolution: int = 24) -> list[np.ndarray]:
    """symusic alone: resample to `resolution` ticks per beat, binary frame roll per track
    `[time, 128]` (tracks with notes, in file order), no pretty_midi/pypianoroll at all."""
    import symusic

    score = symusic.Score(str(path)).resample(resolution, min_dur=1)
    tracks = [t for t in score.tracks if t.note_num() > 0]
    keep = symusic.Score(resolution)
    keep.tracks = tracks  # type: ignore[assignment]
    roll = keep.pianoroll(modes=["frame"], pitch_range=(0, 128), encode_velocity=False)[0]
    return [r.T > 0 for r in roll]


def _native_agreement(ref: pypianoroll.Multitrack, native: list[np.ndarray]) -> tuple[bool, float, float]:
    """(identical binary rolls, recall and precision of symusic's active cells vs the reference)."""
    ref_rolls = [t.pianoroll > 0 for t in ref.tracks if t.pianoroll.any()]
    if len(ref_rolls) != len(native):
        return False, 0.0, 0.0
    same, hit, total, found = True, 0, 0, 0
    for a, b in zip(ref_rolls, native, strict=True):
        n = max(len(a), len(b))
        a = np.pad(a, ((0, n - len(a)), (0, 0)))
        b = np.pad(b, ((0, n - len(b)), (0, 0)))
        same &= bool(np.array_equal(a, b))
        hit, total, found = hit + int((a & b).sum()), total + int(a.sum()), found + int(b.sum())
    return same, hit / max(total, 1), hit / max(found, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS, help="result JSON (default: %(default)s)")
    args = parser.parse_args()
    from lpdvae.data.music.midi import symusic_pretty_midi

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.songs):
            files.append(Path(tmp) / f"song{i:04d}.mid")
            write_song(files[-1], i)
        times = {"pretty_midi_parse": 0.0, "symusic_parse": 0.0, "pretty_midi_total": 0.0, "symusic_total": 0.0,
                 "symusic_native_roll": 0.0}
        native_identical, native_recall, native_precision = 0, [], []
        identical = fallback = notes = 0
        for path in files:
            t0 = time.perf_counter()
            pm = pretty_midi.PrettyMIDI(str(path))
            t1 = time.perf_counter()
            with np.errstate(all="ignore"):
                ref = pypianoroll.from_pretty_midi(pm, resolution=24, mode="sum")
            t2 = time.perf_counter()
            fast_pm = symusic_pretty_midi(path)
            t3 = time.perf_counter()
            if fast_pm is None:
                fallback += 1
                continue
            with np.errstate(all="ignore"):
                fast = pypianoroll.from_pretty_midi(fast_pm, resolution=24, mode="sum")
            t4 = time.perf_counter()
            times["pretty_midi_parse"] += t1 - t0
            times["pretty_midi_total"] += t2 - t0
            times["symusic_parse"] += t3 - t2
            times["symusic_total"] += t4 - t2
            identical += _key(ref) == _key(fast) and np.array_equal(ref.tempo, fast.tempo)
            t5 = time.perf_counter()
            native = symusic_native(path)
            times["symusic_native_roll"] += time.perf_counter() - t5
            same, recall, precision = _native_agreement(ref, native)
            native_identical += same
            native_recall.append(recall)
            native_precision.append(precision)
            notes += sum(len(i.notes) for i in pm.instruments)
    compared = args.songs - fallback
    report = {
        "benchmark": "midi_parse", "songs": args.songs, "compared": compared, "fallback_to_pretty_midi": fallback,
        "identical_rolls": identical, "notes_per_song": notes / max(compared, 1),
        "ms_per_song": {k: 1000 * v / max(compared, 1) for k, v in times.items()},
        "parse_speedup": times["pretty_midi_parse"] / max(times["symusic_parse"], 1e-9),
        "total_speedup": times["pretty_midi_total"] / max(times["symusic_total"], 1e-9),
        "native_speedup": times["pretty_midi_total"] / max(times["symusic_native_roll"], 1e-9),
        "symusic_native_identical_rolls": native_identical,
        "symusic_native_cell_recall": float(np.mean(native_recall)) if native_recall else 0.0,
        "symusic_native_cell_precision": float(np.mean(native_precision)) if native_precision else 0.0,
        "decision": "symusic parses, pypianoroll quantizes (lpdvae.data.music.midi.MIDI_PARSER)" if identical == compared
        else "rolls differ: keep pretty_midi",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    ms = report["ms_per_song"]
    print(f"{compared} songs ({report['notes_per_song']:.0f} notes each): identical rolls {identical}/{compared}; "
          f"parse {ms['pretty_midi_parse']:.1f} -> {ms['symusic_parse']:.1f} ms ({report['parse_speedup']:.1f}x), "
          f"parse+roll {ms['pretty_midi_total']:.1f} -> {ms['symusic_total']:.1f} ms ({report['total_speedup']:.1f}x); "
          f"symusic-native roll {ms['symusic_native_roll']:.1f} ms, identical {native_identical}/{compared}, "
          f"cell recall/precision {report['symusic_native_cell_recall']:.3f}/"
          f"{report['symusic_native_cell_precision']:.3f} "
          f"-> {args.out}")
    return 0 if identical == compared else 1


if __name__ == "__main__":
    sys.exit(main())
