"""evaluate's samples page: each WAV render runs while the next PNGs are drawn, and the page,
written once every render is done, links exactly the WAVs that were made. The renderer is
replaced by a stand-in here (held and failed on demand); test_roll renders through fluidsynth."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lpdvae.evaluation import samples_page
from lpdvae.params import RepresentationParams, TrackSpec, load_params

REPO = Path(__file__).resolve().parents[1]
REP = RepresentationParams(source_resolution=4, beat_resolution=4, beats_per_bar=4, lowest_pitch=48,
                           n_pitches=24, n_bars=2)
TRACKS = [dataclasses.asdict(TrackSpec("melody", kind="monophonic", program=52, is_drum=False,
                                       names=(), programs=()))]


def phrases(n: int) -> np.ndarray:
    """`n` one-track phrases of a held note each (an onset, then sustains)."""
    x = np.zeros((n, 1, REP.n_bars, REP.steps_per_bar, REP.n_pitches), dtype=np.uint8)
    x[:, 0, 0, :8, 5] = 1
    x[:, 0, 0, 0, 5] = 2
    return x


def write(out: Path, n_samples: int = 3) -> Path:
    ev = dataclasses.replace(load_params(REPO / "params.yaml").evaluate, render_audio=True)
    return samples_page.write_page(out, {"recon_note_f1": 0.4}, {"blessed": True, "reasons": []},
                                   phrases(n_samples), phrases(1), phrases(1), phrases(3), TRACKS, REP, ev)


WAIT = 60.0  # a deadlock guard only: each wait below is released by what the page's code does next


class Renderer:
    """render_wav's stand-in: writes a (fake) WAV, fails (False) for `fail`; counts the renders in
    flight (and their peak) and names the renders finished and the PNGs drawn. A test hooks in
    `during_render(name)` and `before_plot(name)` to hold one side until the other gets somewhere."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail = fail
        self.renders: list[str] = []
        self.plots: list[str] = []
        self.in_flight = self.peak = 0
        self.changed = threading.Condition()
        self.during_render: Callable[[str], object] = lambda name: None
        self.before_plot: Callable[[str], object] = lambda name: None

    def render(self, midi: Path, wav: Path, soundfont: str | Path) -> bool:
        name = Path(wav).stem
        with self.changed:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.changed.notify_all()
        try:
            self.during_render(name)
            ok = name not in self.fail
            if ok:
                Path(wav).write_bytes(b"RIFF")
            return ok
        finally:
            with self.changed:
                self.in_flight -= 1
                self.renders.append(name)
                self.changed.notify_all()

    def plot(self, plot_png: Callable[..., Path]) -> Callable[..., Path]:
        def drawn(panels, tracks, rep, path):
            self.before_plot(Path(path).stem)
            out = plot_png(panels, tracks, rep, path)
            with self.changed:
                self.plots.append(Path(path).stem)
                self.changed.notify_all()
            return out
        return drawn

    def wait_for(self, condition: Callable[[], bool]) -> bool:
        """True once `condition` holds; False if it never did (the guard ran out)."""
        with self.changed:
            return self.changed.wait_for(condition, timeout=WAIT)


@pytest.fixture
def renderer(monkeypatch) -> Renderer:
    r = Renderer(fail=("generated-01",))
    monkeypatch.setattr(samples_page, "render_wav", r.render)
    monkeypatch.setattr(samples_page, "plot_png", r.plot(samples_page.plot_png))
    return r


def test_a_failed_render_leaves_only_its_wav_off_the_page(tmp_path, renderer):
    page = write(tmp_path).read_text()
    assert "samples/generated-01.wav" not in page
    made = ["generated-00", "generated-02", "reconstruction-00", "interpolation"]
    assert all(f'src="samples/{name}.wav"' in page for name in made)
    assert sorted(renderer.renders) == sorted([*made, "generated-01"])


def test_wav_renders_run_while_the_pngs_are_drawn(tmp_path, renderer):
    seen: dict[str, bool] = {}

    def during_render(name: str) -> None:
        # held until its own PNG is drawn: a render run on the drawing thread would never see it
        if name == "generated-00":
            seen["png drawn while rendering"] = renderer.wait_for(lambda: "generated-00" in renderer.plots)

    def before_plot(name: str) -> None:
        if name == "interpolation":  # the last PNG: renders that waited for every PNG never finish here
            seen["a render done before the last png"] = renderer.wait_for(lambda: bool(renderer.renders))

    renderer.during_render, renderer.before_plot = during_render, before_plot
    write(tmp_path)
    assert seen == {"png drawn while rendering": True, "a render done before the last png": True}


def test_at_most_audio_workers_renders_run_at_once(tmp_path, renderer):
    release = threading.Event()
    renderer.during_render = lambda name: release.wait(WAIT)  # every render stays in flight until released

    def before_plot(name: str) -> None:
        if name == "interpolation":  # every render is submitted by now: let them go once the pool is full
            renderer.wait_for(lambda: renderer.in_flight >= samples_page.AUDIO_WORKERS)
            release.set()

    renderer.before_plot = before_plot
    write(tmp_path, n_samples=6)
    assert renderer.peak == samples_page.AUDIO_WORKERS
    assert len(renderer.renders) == 8  # 6 generated, a reconstruction, the interpolation
