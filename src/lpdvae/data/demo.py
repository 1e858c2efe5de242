"""Offline demo corpus: music21's bundled Bach chorales rendered to 4-track MIDI.

The team's end-to-end run needs real, license-free music without network access; the chorales
ship inside music21. Only SATB chorales in 4/4 are kept so every song fits the default track set
and representation. MIDI is written from the parsed notes (not music21's exporter) so the bytes
depend only on the notes: re-rendering gives byte-identical files.

The notes come from `lpdvae.data.musicxml`, a lean reader of these files, and the MIDI from
the project's one writer (`lpdvae.data.smf`), which lays the bytes out as mido does; music21's
parse + stripTies and mido's per-message objects were nearly all of a demo ingest (timings in
docs/decisions.md). A file using anything the lean reader does not model is parsed by music21
(`music21_parts`). music21 + mido stay the reference: tests/test_demo.py checks that the lean
path gives the bytes music21 + mido give (tests/midi_reference.py).

Each file carries music21's metadata for its chorale as the MIDI sequence name (the conductor
track's name): "<title> (BWV <n>, Riemenschneider <n>)", from the chorale lists music21 ships in
`corpus/chorales.py`, read as text (no music21 import in the ingest). validate groups songs of
one title into one split (`lpdvae.validation.tune_groups`).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import multiprocessing
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from lpdvae.data import smf
from lpdvae.data.musicxml import LeanPart, Unsupported, read_mxl
from lpdvae.data.pool import die_with_parent
from lpdvae.io import atomic_write_bytes

log = logging.getLogger(__name__)

VOICES = ("soprano", "alto", "tenor", "bass")
PROGRAM = 52  # GM "Choir Aahs" (0-based), the program params.yaml gives the voices
TICKS_PER_BEAT = 480
TEMPO_BPM = 100
VELOCITY = 80
POOL_MIN_SONGS = 8  # below this, a process pool costs more than it saves


def chorale_paths() -> list[Path]:
    """Every bundled Bach .mxl, sorted, so the selection is the same on every machine.

    Globbed from music21's corpus folder without importing music21 (a noticeable part of the
    ingest, docs/decisions.md): the list music21's `corpus.getComposer("bach")` gives (tests/test_demo.py compares them).
    """
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the demo corpus needs music21 (its bundled Bach chorales)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p for p in (package / "corpus" / "bach").rglob("*.mxl") if p.is_file())


def midi_name(path: Path) -> str:
    return f"{path.name.removesuffix('.mxl')}.mid"


_XML_PART_NAME = re.compile(rb"<score-part\b.*?<part-name[^>]*>([^<]*)</part-name>", re.S)
_XML_METER = re.compile(rb"<time\b[^>]*>\s*<beats>([^<]*)</beats>\s*<beat-type>([^<]*)</beat-type>")


_RKBWV_ROW = re.compile(r"^\s*(\d+)---\|\|---([^\n]*?)---\|\|---([^\n]*?)---\|\|---\d+\s*$", re.M)
_WIKI_ROW = re.compile(r"^\s*\|([^|\n]+)\|\|(\d+)\|\|\d+\|\|\d+\|\|\d+\|\|(\d+)\|\|", re.M)


def chorale_titles(source: str) -> dict[str, tuple[str, int]]:
    """{BWV number as in the file names ("269", "248.12-2"): (title, Riemenschneider number)}
    from the text of music21's `corpus/chorales.py` (its ChoraleListRKBWV and ChoraleList)."""
    out = {bwv.strip(): (title.strip(), int(r)) for r, bwv, title in _RKBWV_ROW.findall(source)}
    for title, bwv, r in _WIKI_ROW.findall(source):
        out.setdefault(bwv, (title.strip(), int(r)))
    return out


def _music21_titles() -> dict[str, tuple[str, int]]:
    spec = importlib.util.find_spec("music21")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "corpus" / "chorales.py"
    return chorale_titles(path.read_text(encoding="utf-8")) if path.is_file() else {}


_TITLES: dict[str, tuple[str, int]] | None = None


def chorale_name(path: Path) -> str:
    """The sequence name of a chorale's MIDI: "<title> (BWV <n>, Riemenschneider <n>)", or ""
    when music21's lists do not have it. A variant file ("18.5-lz") takes its movement's entry
    ("18.5-l", "18.5-w" or "18.5"): the same music under another source's reading."""
    global _TITLES
    if _TITLES is None:
        _TITLES = _music21_titles()
    bwv = path.name.removesuffix(".mxl").removeprefix("bwv")
    found = _TITLES.get(bwv)
    if found is None:
        base = bwv.split("-")[0]
        found = next((_TITLES[k] for k in sorted(_TITLES) if k.split("-")[0] == base), None)
    if found is None:
        return ""
    title, riemenschneider = found
    return f"{title} (BWV {bwv}, Riemenschneider {riemenschneider})"


def clearly_not_satb_4_4(path: Path) -> bool:
    """True when the raw MusicXML already rules the chorale out (wrong voices or meter).

    A regex over the XML costs a fraction of a music21 parse, and many chorales are rejects,
    so a rerun with every selected file cached parses nothing. It says "no" only on positive
    evidence; music21 stays the judge of every chorale kept (every file it rejects, music21
    rejects too: the counts are in docs/decisions.md).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if not n.startswith("META-INF/"))
            xml = zf.read(name)
    except (OSError, zipfile.BadZipFile, StopIteration):
        return False
    names = [n.strip().lower().decode("utf-8", "replace") for n in _XML_PART_NAME.findall(xml)]
    meters = {(b.strip() + b"/" + t.strip()).decode("utf-8", "replace")
              for b, t in _XML_METER.findall(xml)}
    return (bool(names) and names != list(VOICES)) or (bool(meters) and meters != {"4/4"})


def _is_satb_4_4(part_names: list[str], meters: set[str]) -> bool:
    return part_names == list(VOICES) and meters == {"4/4"}


def render_chorale(path: Path) -> bytes | None:
    """MIDI bytes of one chorale, or None when it is not an SATB chorale in 4/4.

    The lean reader answers for the files it fully models; music21 for the rest.
    """
    try:
        score = read_mxl(path, accepts=_is_satb_4_4)
    except Unsupported as exc:
        log.debug("%s: %s; reading it with music21", path.name, exc)
        parts = music21_parts(path)
        return None if parts is None else midi_bytes(parts, chorale_name(path))
    if not _is_satb_4_4(score.part_names, score.meters):
        return None
    return midi_bytes([_lean_part_notes(part) for part in score.parts], chorale_name(path))


def music21_parts(path: Path) -> list[list[tuple[int, int, int]]] | None:
    """The chorale's notes per voice as music21 parses it, or None when it is not an SATB
    chorale in 4/4: the fallback for files the lean reader does not model."""
    if clearly_not_satb_4_4(path):
        return None
    from music21 import converter

    score = converter.parse(str(path))
    if not _is_satb_4_4([str(p.partName).lower() for p in score.parts],
                        {ts.ratioString for ts in score.recurse().getElementsByClass("TimeSignature")}):
        return None
    return [_part_notes(part) for part in score.parts]


def _ticks(offset: float, length: float, shift: float) -> tuple[int, int]:
    """(start, end) tick of a note; one float formula for both readers, so their bytes agree."""
    return (round((offset + shift) * TICKS_PER_BEAT),
            round((offset + shift + length) * TICKS_PER_BEAT))


def _lean_part_notes(part: LeanPart) -> list[tuple[int, int, int]]:
    """`_part_notes` for a part from the lean reader."""
    shift = max(0.0, part.shift)
    return sorted((*_ticks(offset, length, shift), pitch)
                  for offset, length, pitch in part.notes if length > 0)


def _part_notes(part) -> list[tuple[int, int, int]]:
    """(start tick, end tick, pitch) of a music21 part; a pickup is shifted so bar lines fall on
    4/4 bars."""
    measures = part.getElementsByClass("Measure")
    shift = 0.0
    if measures:
        first = measures[0]
        shift = max(0.0, float(first.barDuration.quarterLength - first.duration.quarterLength))
    notes = []
    part.stripTies(inPlace=True)  # the default deep-copies the part: 70% of the render time
    for n in part.flatten().notes:
        length = float(n.quarterLength)
        if length <= 0:  # grace notes
            continue
        start, end = _ticks(float(n.offset), length, shift)
        notes.extend((start, end, int(p.midi)) for p in n.pitches)
    return sorted(notes)


def midi_bytes(parts: list[list[tuple[int, int, int]]], name: str = "") -> bytes:
    """Type-1 MIDI: a conductor track (sequence name when given, tempo, 4/4) plus one named
    track per voice."""
    return smf.smf_bytes([smf.Part(voice, channel, PROGRAM, notes, VELOCITY)
                          for channel, (voice, notes) in enumerate(zip(VOICES, parts, strict=True))],
                         TICKS_PER_BEAT, smf.tempo_us(TEMPO_BPM), name=name)


CACHED = b""  # marker: the file is already in out_dir


def _render(job: tuple[Path, Path]) -> tuple[Path, bytes | None]:
    path, out_dir = job
    if (out_dir / midi_name(path)).exists():
        return path, CACHED
    return path, render_chorale(path)


def _rendered(jobs: list[tuple[Path, Path]], workers: int) -> Iterator[tuple[Path, bytes | None]]:
    """Results in input order (imap keeps it) so the 'first N' never depends on timing."""
    if workers <= 1:
        yield from map(_render, jobs)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, die_with_parent, (os.getpid(),)) as pool:  # leaving the block terminates work past the N-th song
        yield from pool.imap(_render, jobs, chunksize=2)


def render_demo_corpus(out_dir: Path, songs: int | None) -> list[Path]:
    """Write the first `songs` SATB 4/4 chorales (None: every one) to `out_dir` as MIDI;
    returns their paths.

    A file already present counts as selected without re-parsing (only selected chorales are
    ever written there), so reruns are nearly free.
    """
    if songs is not None and songs < 1:
        raise ValueError(f"songs must be >= 1, got {songs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = chorale_paths()
    cached = sum((out_dir / midi_name(p)).exists() for p in paths)
    wanted = len(paths) if songs is None else songs
    from lpdvae.host.cpus import available_cpus

    workers = min(2, available_cpus()) if wanted - cached >= POOL_MIN_SONGS else 1  # never past the quota
    selected: list[Path] = []
    with tqdm(total=wanted, unit="song", desc="demo chorales") as bar:
        gen = _rendered([(p, out_dir) for p in paths], workers)
        try:
            for path, data in gen:
                if data is None:
                    continue
                if data != CACHED:
                    atomic_write_bytes(out_dir / midi_name(path), data)
                selected.append(out_dir / midi_name(path))
                bar.update(1)
                if len(selected) >= wanted:
                    break
        finally:
            gen.close()
    if songs is not None and len(selected) < songs:
        log.warning("only %d SATB 4/4 chorales available (asked for %d)", len(selected), songs)
    return selected


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd(args: argparse.Namespace, params: object) -> int:
    files = render_demo_corpus(Path(args.out), args.songs)
    print(f"demo-data: {len(files)} chorales in {args.out}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="render music21's Bach chorales to 4-track MIDI (offline)",
                       description="Render the first N Bach chorales bundled with music21 (SATB, 4/4) "
                       "to MIDI with tracks soprano/alto/tenor/bass. Existing files are kept.")
    p.add_argument("out", help="output folder")
    p.add_argument("--songs", type=_positive, default=120, help="number of chorales (default: %(default)s)")
    p.set_defaults(func=_cmd, needs_params=False)
