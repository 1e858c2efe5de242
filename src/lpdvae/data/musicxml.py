"""A lean MusicXML reader for the demo chorales: the notes music21 would give, much faster.

music21's `converter.parse` plus `stripTies` were most of the demo ingest (timings in
docs/decisions.md). This reader re-implements only the part of music21 10.5's MusicXML import that
decides a note's offset, length and pitch (measure offsets from each measure's highest time,
the pickup shift, full-measure rests, Finale's hidden <forward> rests, and stripTies' tie
merging with its quirks), so the MIDI rendered from it is byte-identical to the music21 path.

It models no more than that. Anything it does not model with certainty (chords, <backup>,
several voices in a measure, several staves, tuplets, cue or unpitched notes, empty measures,
non-dyadic lengths, odd ties or accidentals, ...) raises `Unsupported`, and the caller falls
back to music21. On music21 10.5's Bach chorales that fallback is rare and every other file
gives music21's bytes and verdicts (benchmarks/demo_render_bench.py checks all of them; the
counts are in docs/decisions.md); tests/test_demo.py keeps comparing both paths on a sample,
music21 staying the oracle.
"""

from __future__ import annotations

import gc
import math
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree as ET

__all__ = ["LeanPart", "LeanScore", "Unsupported", "read_mxl"]

MAX_DENOMINATOR = 65535  # music21's opFrac turns a float with a larger denominator into a Fraction
DEFAULT_DIVISIONS = 10080  # music21's defaults.divisionsPerQuarter, used before any <divisions>
BAR = 4.0  # quarter length of a 4/4 bar; only 4/4 chorales get past the meter check
_STEP_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ALTER_NAME = {-2: "double-flat", -1: "flat", 0: "natural", 1: "sharp", 2: "double-sharp"}
_ACCIDENTAL_ALTER = {"flat-flat": -2, "double-flat": -2, "flat": -1, "natural": 0, "sharp": 1,
                     "double-sharp": 2, "sharp-sharp": 2}
# <note> children that change music21's notes in ways this reader does not model
_UNMODELLED_NOTE_TAGS = ("chord", "cue", "unpitched", "time-modification")
# measure children this reader skips: they insert nothing with a duration, or nothing at all
_PASSIVE_TAGS = frozenset({"attributes", "direction", "sound", "barline", "print", "bookmark",
                           "link", "grouping"})


class Unsupported(Exception):
    """The file uses a MusicXML feature this reader does not reproduce music21's reading of."""


@dataclass(frozen=True)
class LeanPart:
    """One part as music21 leaves it after `stripTies`.

    `shift` is bar duration - first measure's duration (music21's pickup measure), not yet
    clamped at 0; `notes` are (offset, quarter length, midi pitch) with ties merged, grace
    notes dropped, in offset order.
    """

    shift: float
    notes: list[tuple[float, float, int]]


@dataclass(frozen=True)
class LeanScore:
    """Part names lower-cased as music21's `str(part.partName).lower()`, time signatures as
    music21's `ratioString`s, and the parts (empty when the names or meters already reject)."""

    part_names: list[str]
    meters: set[str]
    parts: list[LeanPart]


@dataclass
class _Item:
    """A note or rest of positive length, in music21's flat order, for the tie merge."""

    offset: float
    length: float
    midi: int | None  # None: a rest
    pitch: tuple[str, int, str | None] | None  # (step, octave, accidental name): Pitch.__eq__
    tie: str | None


def read_mxl(path: Path, *, accepts: Callable[[list[str], set[str]], bool] | None = None
             ) -> LeanScore:
    """Read a compressed MusicXML file; `accepts(names, meters)` False stops before the notes.

    Raises `Unsupported` for anything outside the modelled subset (the caller uses music21).
    """
    root = _root(path)
    if root.tag != "score-partwise":
        raise Unsupported(f"root <{root.tag}>")
    if root.find(".//staves") is not None or root.find(".//multiple-rest") is not None:
        raise Unsupported("several staves or a multi-measure rest")
    score_parts = {sp.get("id"): sp for sp in root.iterfind("part-list/score-part")}
    parts = root.findall("part")
    names = []
    for part in parts:
        score_part = score_parts.get(part.get("id"))
        if part.get("id") is None or score_part is None:
            raise Unsupported("a <part> without a matching <score-part>")
        names.append(_part_name(score_part))
    meters = {_meter(t) for t in root.iter("time")}
    if accepts is not None and not accepts(names, meters):
        return LeanScore(names, meters, [])
    finale = _written_by_finale(root)
    return LeanScore(names, meters, [_read_part(part, finale) for part in parts])


def _root(path: Path) -> ET.Element:
    """The score element of the first .musicxml/.xml member, the member music21 reads."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if "META-INF" not in n
                           and (Path(n).suffix in (".musicxml", ".xml", ".mxl") or n == ".xml")),
                          None)
            if member is None:
                raise Unsupported("no MusicXML member in the archive")
            data = zf.read(member)
        with _gc_paused():
            return ET.fromstring(data)
    except (OSError, zipfile.BadZipFile, ET.ParseError) as exc:
        raise Unsupported(f"unreadable: {exc}") from exc


@contextmanager
def _gc_paused():
    """Pause the cycle collector while ElementTree builds a chorale's thousands of elements: a
    tree has no cycles, and in a process holding music21's objects the collections it triggers
    cost more than the parse (docs/decisions.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _part_name(score_part: ET.Element) -> str:
    text = score_part.findtext("part-name")
    if text is None or not text.strip():  # music21 leaves partName None
        raise Unsupported("a part without a name")
    return text.strip().replace("\n", " ").lower()


def _meter(time: ET.Element) -> str:
    beats, beat_types = time.findall("beats"), time.findall("beat-type")
    if len(beats) != 1 or len(beat_types) != 1 or len(time) != 2:
        raise Unsupported("a compound or unmeasured time signature")
    b, t = _text(beats[0]), _text(beat_types[0])
    if not (b.isdigit() and t.isdigit() and b == str(int(b)) and t == str(int(t))):
        raise Unsupported(f"time signature {b}/{t}")
    return f"{b}/{t}"


def _written_by_finale(root: ET.Element) -> bool:
    """music21's test for its Finale workarounds: the first non-empty <software> names Finale."""
    for software in root.iterfind("identification/encoding/software"):
        if text := _text(software):
            return "Finale" in text
    return False


def _quarters(text: str, divisions: int) -> float:
    """A <duration> in quarter notes, as the float music21 keeps for it.

    Only dyadic lengths with a denominator music21's opFrac keeps as a float (<= 65535) are
    accepted: their sums are exact in floating point, so every offset below equals music21's.
    """
    if not text.isdigit():
        raise Unsupported(f"duration {text!r}")
    num, den = int(text), divisions
    den //= math.gcd(num, den)
    if den & (den - 1) or den > MAX_DENOMINATOR:
        raise Unsupported(f"length {num}/{divisions} is not a dyadic float for music21")
    return num / divisions


def _read_part(part: ET.Element, finale: bool) -> LeanPart:
    measures = part.findall("measure")
    if len(measures) < 2:  # a lone measure would be both pickup and Finale-trimmed last bar
        raise Unsupported("fewer than two measures")
    if measures[0].find("attributes/time") is None:  # music21 would look for a bar length
        raise Unsupported("no time signature in the first measure")
    divisions = DEFAULT_DIVISIONS
    items: list[_Item] = []
    measure_offset = 0.0
    shift = None
    for measure in measures:
        highest, divisions = _read_measure(measure, measure_offset, divisions, finale, items)
        if shift is None:
            shift = BAR - highest
        measure_offset += highest  # music21: the next measure starts at this one's highest time
    return LeanPart(shift, _strip_ties(items))


@dataclass
class _Note:
    """The children of a <note> this reader looks at, gathered in one pass."""

    duration: str = ""
    type: str = ""
    dots: int = 0
    rest: ET.Element | None = None
    pitch: ET.Element | None = None
    accidental: str = ""
    ties: list[str | None] = field(default_factory=list)
    grace: bool = False


def _note(el: ET.Element) -> _Note:
    n = _Note()
    for child in el:
        tag = child.tag
        if tag == "duration":
            n.duration = _text(child)
        elif tag == "type":
            n.type = _text(child)
        elif tag == "dot":
            n.dots += 1
        elif tag == "rest":
            n.rest = child
        elif tag == "pitch":
            n.pitch = child
        elif tag == "accidental":
            n.accidental = _text(child)
        elif tag == "tie":
            n.ties.append(child.get("type"))
        elif tag == "grace":
            n.grace = True
        elif tag in _UNMODELLED_NOTE_TAGS:
            raise Unsupported(f"<{tag}> in a note")
    return n


def _voices(measure: ET.Element) -> set[str]:
    return {_text(v) for el in measure if el.tag in ("note", "forward")
            for v in el.findall("voice") if _text(v)}


def _read_measure(measure: ET.Element, measure_offset: float, divisions: int, finale: bool,
                  items: list[_Item]) -> tuple[float, int]:
    """Append the measure's notes and rests to `items`; returns (highest time, divisions)."""
    if len(_voices(measure)) > 1:
        raise Unsupported("several voices in a measure")
    offset = 0.0
    sounding_end = 0.0  # highest end of a note or rest
    passive_at = 0.0  # highest offset of a zero-length element (clef, direction, ...)
    rests: list[tuple[_Note, _Item, float]] = []  # with the offset in the measure
    notes = 0
    full_measure_rest = False
    forwards = 0
    for el in measure:
        tag = el.tag
        if tag == "note":
            n = _note(el)
            if n.grace:  # zero length: music21 drops it from both lists
                notes += 1
                passive_at = max(passive_at, offset)
                continue
            length = _quarters(n.duration, divisions)
            if n.rest is not None:
                item = _Item(measure_offset + offset, length, None, None, None)
                rests.append((n, item, offset))
                full_measure_rest = full_measure_rest or _marked_full_measure(n)
            else:
                notes += 1
                midi, pitch = _pitch(n)
                item = _Item(measure_offset + offset, length, midi, pitch, _tie(n.ties))
            if length > 0:
                items.append(item)
            sounding_end = max(sounding_end, offset + length)
            offset += length
        elif tag == "forward":
            forwards += 1
            length = _quarters(_text(el.find("duration")), divisions)
            if finale:  # music21 fills the gap with a hidden rest
                items.append(_Item(measure_offset + offset, length, None, None, None))
                sounding_end = max(sounding_end, offset + length)
            offset += length
        elif tag == "backup":
            raise Unsupported("<backup>")
        elif tag in _PASSIVE_TAGS:
            divisions = _passive(el, divisions)
            passive_at = max(passive_at, offset)
        else:
            raise Unsupported(f"<{tag}> in a measure")
    if notes == 0 and len(rests) == 1:
        full_measure_rest = True
    if full_measure_rest:
        sounding_end = _full_measure_rest(rests, forwards, sounding_end)
    _check_measure_end(sounding_end, passive_at)
    return sounding_end, divisions


def _passive(el: ET.Element, divisions: int) -> int:
    """A zero-length element (attributes, direction, ...): the divisions it sets, or `divisions`."""
    if el.tag == "attributes" and (d := _text(el.find("divisions"))):
        if not d.isdigit() or int(d) == 0:
            raise Unsupported(f"divisions {d!r}")
        divisions = int(d)
    if el.tag == "direction" and el.find("offset") is not None:
        raise Unsupported("a direction with an <offset>")
    return divisions


def _check_measure_end(sounding_end: float, passive_at: float) -> None:
    """Refuse the measure ends music21 would read differently from the notes as written."""
    if passive_at > sounding_end:
        raise Unsupported("a zero-length element after the last note")
    if sounding_end == 0:  # music21 would fill it with a bar rest
        raise Unsupported("an empty measure")
    if sounding_end > BAR and not _overfull_kept(sounding_end - BAR):
        raise Unsupported(f"an overfull measure music21 cuts to the bar ({sounding_end} quarters)")


def _overfull_kept(excess: float) -> bool:
    """music21 keeps an overfull measure's length when the excess is "round": over half a beat
    or a multiple of 1/16 (exact here, the lengths being dyadic). Its 1/12 case cannot occur."""
    return excess > 0.5 or (excess * 16).is_integer()


def _marked_full_measure(n: _Note) -> bool:
    """A rest marked measure="yes" (of no other written type than whole or breve)."""
    return n.rest is not None and n.rest.get("measure") == "yes" and n.type in ("", "whole", "breve")


def _full_measure_rest(rests: list[tuple[_Note, _Item, float]], forwards: int,
                       sounding_end: float) -> float:
    """music21 stretches a measure's first rest to the bar when it is a whole (or breve) rest
    of another length, or marked measure="yes"; returns the measure's new highest time."""
    if forwards:
        raise Unsupported("a full-measure rest beside a <forward>")
    n, item, offset = rests[0]
    marked = _marked_full_measure(n)
    if n.type:
        type_, dots = n.type, n.dots
    else:  # music21 derives the type from the length
        type_, dots = {4.0: ("whole", 0), 8.0: ("breve", 0)}.get(item.length, ("", 0))
    if marked or (item.length != BAR and type_ in ("whole", "breve") and dots == 0):
        if item.length == 0 or item.length > BAR:
            raise Unsupported(f"a full-measure rest of {item.length} quarters")
        item.length = BAR
        return max(sounding_end, offset + BAR)
    return sounding_end


def _pitch(n: _Note) -> tuple[int, tuple[str, int, str | None]]:
    """MIDI number and music21's Pitch identity (step, octave, accidental name)."""
    p = n.pitch
    if p is None:
        raise Unsupported("a note without a pitch")
    step, octave = _text(p.find("step")), _text(p.find("octave"))
    if step not in _STEP_PC or not octave.lstrip("-").isdigit():
        raise Unsupported(f"pitch {step}{octave}")
    alter_text = _text(p.find("alter"))
    try:
        alter = float(alter_text) if alter_text else None
    except ValueError as exc:
        raise Unsupported(f"alter {alter_text!r}") from exc
    if alter is not None and not alter.is_integer():
        raise Unsupported(f"microtonal alter {alter}")
    accidental = n.accidental
    if accidental:
        if accidental not in _ACCIDENTAL_ALTER or (
                alter is not None and alter != _ACCIDENTAL_ALTER[accidental]):
            raise Unsupported(f"accidental {accidental!r} with alter {alter}")
        name: str | None = _ALTER_NAME[_ACCIDENTAL_ALTER[accidental]]
        semitones = _ACCIDENTAL_ALTER[accidental]
    elif alter is not None:
        if int(alter) not in _ALTER_NAME:
            raise Unsupported(f"alter {alter}")
        name, semitones = _ALTER_NAME[int(alter)], int(alter)
    else:
        name, semitones = None, 0
    midi = (int(octave) + 1) * 12 + _STEP_PC[step] + semitones
    if not 0 <= midi <= 127:
        raise Unsupported(f"pitch out of MIDI range: {midi}")
    return midi, (step, int(octave), name)


def _tie(types: list[str | None]) -> str | None:
    """music21's Tie type from the <tie> elements (not <tied>): a stop+start pair is 'continue'."""
    if not types:
        return None
    if len(types) == 1 and types[0] in ("start", "stop", "continue"):
        return types[0]
    if sorted(types) == ["start", "stop"]:
        return "continue"
    raise Unsupported(f"ties {types}")


def _strip_ties(items: list[_Item]) -> list[tuple[float, float, int]]:
    """music21's `stripTies(matchByPitch=True)` on one voice of notes and rests.

    Kept step for step, including its quirks: a rest does not end an open chain, a tie start
    after an open chain extends it, and a note without a tie after a chain joins it when its
    pitch spelling is the same.
    """
    connected: list[int] = []
    deleted: set[int] = set()

    def end_match(i: int) -> bool:
        n, last = items[i], items[i - 1] if i > 0 else None
        if n.midi is not None and n.tie == "stop":
            return True
        if last is None or (i - 1) not in connected:
            return False
        if n.midi is not None and last.midi is not None:
            return last.pitch == n.pitch
        # music21 compares .pitches of a rest (none) with the last element's
        return n.midi is None and last.midi is None

    for i, n in enumerate(items):
        match: bool | None = None
        if n.midi is not None and n.tie == "start":
            if i == 0 or (i - 1) not in connected:
                connected = [i]
            else:
                connected.append(i)
            match = False
        elif n.midi is not None and n.tie == "continue":
            if not connected:
                connected.append(i)
            elif end_match(i):
                connected.append(i)
            else:
                connected = [i]
            match = False
        if match is None:
            match = end_match(i)
        if match:
            connected.append(i)
            if len(connected) < 2:
                connected = []
                continue
            total = sum(items[q].length for q in connected[1:])
            if total == 0:
                raise Unsupported("a tie chain of zero length")
            deleted.update(connected[1:])
            items[connected[0]].length += total
            items[connected[0]].tie = None
            connected = []
    return [(it.offset, it.length, it.midi) for i, it in enumerate(items)
            if i not in deleted and it.midi is not None]
