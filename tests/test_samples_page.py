"""evaluate's samples page: each WAV render runs while the next PNGs are drawn, and the page,
written once every render is done, links exactly the WAVs that were made. The renderer is
replaced by a stand-in here (timing and failure on demand); test_roll renders through fluidsynth."""

from __future__ import annotations

import dataclasses
import threading
import time
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


class Renderer:
    """render_wav's stand-in: writes a (fake) WAV after `seconds`, fails (False) for `fail`;
    records when each render and each PNG ran."""

    def __init__(self, seconds: float = 0.0, fail: tuple[str, ...] = ()) -> None:
        self.seconds, self.fail = seconds, fail
        self.renders: dict[str, tuple[float, float]] = {}
        self.plots: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def render(self, midi: Path, wav: Path, soundfont: str | Path) -> bool:
        start = time.perf_counter()
        time.sleep(self.seconds)
        ok = Path(wav).stem not in self.fail
        if ok:
            Path(wav).write_bytes(b"RIFF")
        with self.lock:
            self.renders[Path(wav).stem] = (start, time.perf_counter())
        return ok

    def plot(self, plot_png):
        def timed(panels, tracks, rep, path):
            start = time.perf_counter()
            out = plot_png(panels, tracks, rep, path)
            self.plots[Path(path).stem] = (start, time.perf_counter())
            return out
        return timed


@pytest.fixture
def renderer(monkeypatch) -> Renderer:
    r = Renderer(seconds=0.3, fail=("generated-01",))
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
    write(tmp_path)
    render_start, render_end = renderer.renders["generated-00"]
    plot_start, _ = renderer.plots["generated-00"]
    assert render_start < plot_start + 0.1 and plot_start < render_end  # its PNG drew meanwhile
    last_plot_end = max(end for _, end in renderer.plots.values())
    first_render_end = min(end for _, end in renderer.renders.values())
    assert first_render_end < last_plot_end  # renders did not wait for all the PNGs


def test_at_most_audio_workers_renders_run_at_once(tmp_path, renderer):
    write(tmp_path, n_samples=6)
    events = sorted([(s, 1) for s, _ in renderer.renders.values()] + [(e, -1) for _, e in renderer.renders.values()])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == samples_page.AUDIO_WORKERS
