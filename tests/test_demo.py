"""The offline demo corpus: SATB chorales, deterministic bytes, named tracks."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import pretty_midi
import pytest

from lpdvae.data import demo, musicxml
from lpdvae.data.demo import VOICES, render_demo_corpus
from lpdvae.data.music.midi import sequence_name
from tests.midi_reference import mido_bytes, render_chorale_reference

# Chorales whose reading exercises each modelled corner of music21's import: tie "continue"
# chains and a measure="yes" rest (bwv10.7), a tie between two spellings (bwv227.7), Finale's
# hidden <forward> rests and changing <divisions> (bwv111.6), overfull measures music21 keeps
# long (bwv119.9, bwv324), a grace note (bwv315), pickups (most), a reject the lean reader
# decides (bwv1.6) and one it leaves to music21 (bwv846: two staves).
ORACLE_SAMPLE = ("bwv10.7", "bwv227.7", "bwv111.6", "bwv119.9", "bwv324", "bwv315", "bwv101.7",
                 "bwv1.6", "bwv846")


def test_demo_render_is_byte_identical_twice(tmp_path):
    a = render_demo_corpus(tmp_path / "a", 2)
    b = render_demo_corpus(tmp_path / "b", 2)
    assert [p.name for p in a] == [p.name for p in b]
    assert len(a) == 2
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_demo_midi_has_four_named_voice_tracks_in_4_4(tmp_path):
    (path,) = render_demo_corpus(tmp_path, 1)
    pm = pretty_midi.PrettyMIDI(str(path))
    assert [i.name for i in pm.instruments] == list(VOICES)
    assert all(len(i.notes) > 8 for i in pm.instruments)
    assert {(t.numerator, t.denominator) for t in pm.time_signature_changes} == {(4, 4)}


def test_demo_skips_files_already_present(tmp_path):
    (path,) = render_demo_corpus(tmp_path, 1)
    path.write_bytes(b"kept")
    assert render_demo_corpus(tmp_path, 1) == [path]
    assert path.read_bytes() == b"kept"


def test_chorale_paths_are_music21s_bach_chorales():
    from music21 import corpus

    expected = sorted(Path(p) for p in corpus.getComposer("bach") if str(p).endswith(".mxl"))
    assert demo.chorale_paths() == expected and len(expected) > 300


def test_demo_data_cli_does_not_need_params():
    parser = argparse.ArgumentParser()
    demo.register_cli(parser.add_subparsers())
    args = parser.parse_args(["demo-data", "out", "--songs", "3"])
    assert args.songs == 3 and args.needs_params is False


def test_xml_prefilter_rejects_only_chorales_music21_rejects(monkeypatch):
    rejected = [p for p in demo.chorale_paths()[:40] if demo.clearly_not_satb_4_4(p)][:4]
    assert rejected, "the first 40 chorales include non-SATB or non-4/4 ones"
    monkeypatch.setattr(demo, "clearly_not_satb_4_4", lambda path: False)
    assert [render_chorale_reference(p) for p in rejected] == [None] * len(rejected)


@pytest.mark.parametrize("name", ORACLE_SAMPLE)
def test_lean_reader_renders_the_bytes_music21_renders(name):
    (path,) = [p for p in demo.chorale_paths() if p.name == f"{name}.mxl"]
    assert demo.render_chorale(path) == render_chorale_reference(path)


def test_oracle_sample_covers_a_selected_a_rejected_and_a_fallback_chorale():
    paths = {p.name.removesuffix(".mxl"): p for p in demo.chorale_paths()}
    verdicts = {}
    for name in ORACLE_SAMPLE:
        try:
            verdicts[name] = bool(musicxml.read_mxl(paths[name], accepts=demo._is_satb_4_4).parts)
        except musicxml.Unsupported:
            verdicts[name] = None
    assert set(verdicts.values()) == {True, False, None}


def _mxl(tmp_path, first: str, second: str):
    """A four-part SATB 4/4 score, each part holding measures `first` and `second`, as .mxl."""
    parts = "".join(f'<score-part id="P{i}"><part-name>{v.title()}</part-name></score-part>'
                    for i, v in enumerate(VOICES))
    attributes = ("<attributes><divisions>1</divisions>"
                  "<time><beats>4</beats><beat-type>4</beat-type></time></attributes>")
    body = "".join(f'<part id="P{i}"><measure number="1">{attributes}{first}</measure>'
                   f'<measure number="2">{second}</measure></part>' for i in range(4))
    xml = (f'<?xml version="1.0"?><score-partwise><part-list>{parts}</part-list>{body}'
           "</score-partwise>")
    path = tmp_path / "tiny.mxl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny.xml", xml)
    return path


def _n(step: str, quarters: int, *ties: str) -> str:
    tie = "".join(f'<tie type="{t}"/>' for t in ties)
    return (f"<note><pitch><step>{step}</step><octave>4</octave></pitch>"
            f"<duration>{quarters}</duration>{tie}</note>")


def _rest(quarters: int, type_: str = "half") -> str:
    return f"<note><rest/><duration>{quarters}</duration><type>{type_}</type></note>"


def test_lean_reader_hands_an_unmodelled_feature_to_music21(tmp_path):
    path = _mxl(tmp_path, _n("C", 2) + "<backup><duration>2</duration></backup>" + _n("E", 2),
                _n("G", 4))
    with pytest.raises(musicxml.Unsupported, match="backup"):
        musicxml.read_mxl(path)
    assert demo.render_chorale(path) == render_chorale_reference(path) is not None


# corners of music21's reading that the bundled chorales do not all reach
SYNTHETIC = {
    "tie across the bar": (_n("C", 2) + _n("D", 2, "start"), _n("D", 2, "stop") + _n("E", 2)),
    "tie continue chain": (_n("C", 2) + _n("D", 2, "start"),
                           _n("D", 2, "stop", "start") + _n("D", 2, "stop")),
    "rest inside a tie": (_n("C", 2, "start") + _rest(2), _n("C", 2, "stop") + _n("E", 2)),
    "tie ended by pitch": (_n("C", 2) + _n("D", 2, "start"), _n("D", 2) + _n("E", 2)),
    "whole rest short of the bar": (_rest(2, "whole"), _n("C", 4)),
    "pickup": (_n("C", 1), _n("D", 4)),
}


@pytest.mark.parametrize("case", SYNTHETIC)
def test_lean_reader_matches_music21_on_a_synthetic_corner(tmp_path, case):
    path = _mxl(tmp_path, *SYNTHETIC[case])
    musicxml.read_mxl(path)  # modelled: no Unsupported
    assert demo.render_chorale(path) == render_chorale_reference(path) is not None


def test_smf_writer_writes_mido_bytes():
    parts = [[(0, 480, 60), (0, 960, 64), (480, 200_000, 67)],  # multi-byte deltas, chords
             [(960, 1440, 48), (1440, 1920, 48)],  # a note-off and note-on on one tick
             [],  # an empty voice
             [(100, 101, 0), (101, 90_000, 127)]]
    assert demo.midi_bytes(parts) == mido_bytes(parts)


def test_smf_writer_writes_mido_bytes_with_a_utf8_sequence_name():
    parts = [[(0, 480, 60)], [(0, 480, 55)], [(0, 480, 50)], [(0, 480, 40)]]
    name = "Meine Seel’ erhebt den Herren (BWV 10.7, Riemenschneider 358)"
    assert demo.midi_bytes(parts, name) == mido_bytes(parts, name)


def test_demo_midi_names_music21s_title_and_riemenschneider_number():
    path = next(p for p in demo.chorale_paths() if p.name == "bwv279.mxl")
    name = sequence_name(demo.render_chorale(path))
    assert name == "Christ lag in Todesbanden (BWV 279, Riemenschneider 261)"


def test_chorale_titles_match_music21s_chorale_lists():
    from music21.corpus import chorales

    titles = demo.chorale_titles(Path(chorales.__file__).read_text(encoding="utf-8"))
    rk = chorales.ChoraleListRKBWV().byBWV
    assert {k: (v["title"], v["riemenschneider"]) for k, v in rk.items()}.items() <= titles.items()
