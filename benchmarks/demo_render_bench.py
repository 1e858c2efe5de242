"""Demo chorales: the lean reader + SMF writer (`demo.render_chorale`) vs music21 + mido
(`tests.midi_reference.render_chorale_reference`, the reference), on every bundled Bach chorale.

Reports how many files give identical bytes (and identical verdicts: selected or rejected),
how many the lean reader leaves to music21, and the time per chorale of each path, in one
process (music21's parse is served from its pickle cache after a first run).

    python -m benchmarks.demo_render_bench [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lpdvae.data import demo, musicxml
from tests.midi_reference import render_chorale_reference

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "demo_render.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N chorales only")
    parser.add_argument("--out", type=Path, default=RESULTS, help="result JSON (default: %(default)s)")
    args = parser.parse_args()
    paths = demo.chorale_paths()[:args.limit]
    lean_s = music21_s = 0.0
    counts = {"files": len(paths), "identical": 0, "selected": 0, "rejected": 0, "fallback": 0}
    different = []
    for path in paths:
        try:
            musicxml.read_mxl(path, accepts=demo._is_satb_4_4)
        except musicxml.Unsupported:
            counts["fallback"] += 1
        t0 = time.perf_counter()
        lean = demo.render_chorale(path)
        t1 = time.perf_counter()
        reference = render_chorale_reference(path)
        t2 = time.perf_counter()
        lean_s, music21_s = lean_s + t1 - t0, music21_s + t2 - t1
        if lean == reference:
            counts["identical"] += 1
            counts["selected" if lean is not None else "rejected"] += 1
        else:
            different.append(path.name)
    report = {**counts, "different": different,
              "lean_ms_per_chorale": round(1000 * lean_s / len(paths), 2),
              "music21_ms_per_chorale": round(1000 * music21_s / len(paths), 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{counts['identical']}/{counts['files']} identical ({counts['selected']} selected, "
          f"{counts['rejected']} rejected; {counts['fallback']} via music21); "
          f"lean {report['lean_ms_per_chorale']} ms vs music21 {report['music21_ms_per_chorale']} "
          f"ms a chorale -> {args.out}")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
