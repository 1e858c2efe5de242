"""The offline demo corpus: SATB chorales, deterministic bytes, named tracks."""

from __future__ import annotations

import argparse

import pretty_midi

from lpdvae import demo
from lpdvae.demo import VOICES, render_demo_corpus


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


def test_demo_data_cli_does_not_need_params():
    parser = argparse.ArgumentParser()
    demo.register_cli(parser.add_subparsers())
    args = parser.parse_args(["demo-data", "out", "--songs", "3"])
    assert args.songs == 3 and args.needs_params is False


def test_xml_prefilter_rejects_only_chorales_music21_rejects(monkeypatch):
    rejected = [p for p in demo.chorale_paths()[:40] if demo.clearly_not_satb_4_4(p)][:4]
    assert rejected, "the first 40 chorales include non-SATB or non-4/4 ones"
    monkeypatch.setattr(demo, "clearly_not_satb_4_4", lambda path: False)
    assert [demo.render_chorale(p) for p in rejected] == [None] * len(rejected)
