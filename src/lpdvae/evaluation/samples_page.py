"""evaluate's `index.html`: the verdict, the gate's numbers beside the baseline and the data,
and samples to look at and listen to (generated, original | reconstruction, an interpolation).

Media are separate files the page links (MIDI, PNG, WAV), so the page itself stays a few KB.
"""

from __future__ import annotations

import html
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lpdvae.data.roll import plot_png, render_wav, write_midi
from lpdvae.evaluation.baselines import BASELINES
from lpdvae.io import atomic_write_text
from lpdvae.params import EvaluateParams, RepresentationParams

SIDES = ("generated", "reference")
AUDIO_WORKERS = 2  # fluidsynth renders in flight while the PNGs are drawn (one core each)


def write_page(out: Path, metrics: dict[str, float], blessing: dict[str, Any], generated: np.ndarray,
               originals: np.ndarray, recon: np.ndarray, interpolation: np.ndarray,
               tracks: list[dict[str, Any]], rep: RepresentationParams, ev: EvaluateParams) -> Path:
    """The page and its media. Each WAV render starts as soon as its MIDI is written and runs
    (a subprocess, waited on in a thread) while the next PNGs are drawn; the page is written
    once every render has finished, a failed one leaving its WAV out."""
    folder = out / "samples"
    cards: list[dict[str, str]] = []
    renders: list[tuple[dict[str, str], Future[bool]]] = []

    def media(audio: ThreadPoolExecutor, name: str, phrases: np.ndarray,
              panels: list[tuple[str, np.ndarray]]) -> None:
        midi = write_midi(phrases, tracks, rep, folder / f"{name}.mid")
        entry = {"name": name, "midi": f"samples/{name}.mid", "png": f"samples/{name}.png"}
        if ev.render_audio:
            renders.append((entry, audio.submit(render_wav, midi, folder / f"{name}.wav", ev.soundfont)))
        plot_png(panels, tracks, rep, folder / f"{name}.png")
        cards.append(entry)

    with ThreadPoolExecutor(AUDIO_WORKERS, thread_name_prefix="render_wav") as audio:
        try:
            for i, phrase in enumerate(generated):
                media(audio, f"generated-{i:02d}", phrase, [(f"generated {i}", phrase)])
            for i, (orig, rec) in enumerate(zip(originals, recon, strict=True)):
                media(audio, f"reconstruction-{i:02d}", np.stack([orig, rec]),
                      [(f"test phrase {i}", orig), (f"reconstruction {i}", rec)])
            media(audio, "interpolation", interpolation,
                  [(f"step {k}", p) for k, p in enumerate(interpolation)])
        except BaseException:
            audio.shutdown(cancel_futures=True)  # renders not yet started are not waited for
            raise
    for entry, render in renders:
        if render.result():
            entry["wav"] = f"samples/{entry['name']}.wav"
    return atomic_write_text(out / "index.html", _page(metrics, blessing, cards))


def _page(metrics: dict[str, float], blessing: dict[str, Any], cards: list[dict[str, str]]) -> str:
    verdict = "blessed" if blessing["blessed"] else "not blessed: " + "; ".join(blessing["reasons"])
    items = []
    for s in cards:
        name = html.escape(s["name"])
        audio = f'<audio controls preload="none" src="{s["wav"]}"></audio>' if "wav" in s else ""
        items.append(f'<figure><img src="{s["png"]}" alt="{name}" loading="lazy">'
                     f'<figcaption>{name} {audio} <a href="{s["midi"]}" download>MIDI</a>'
                     "</figcaption></figure>")
    quality = baseline_rows(metrics)
    others = [[k, _fmt(v)] for k, v in sorted(metrics.items())
              if k.split(".", 1)[0] in ("diversity", "copy") or k in
              ("kl_nats", "kl_bits", "active_units", "neg_elbo", "temperature", "n_test_phrases")]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lpdvae evaluation</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:.6em;"
        "vertical-align:top}img{max-width:100%;display:block}td,th{padding:0 .8em;text-align:right}"
        "</style></head><body>"
        f"<h1>lpdvae evaluation</h1><p><b>{html.escape(verdict)}</b></p>"
        "<h2>Reconstruction vs the baselines (test split, 95% song-bootstrap intervals)</h2>"
        f"{_table(['predictor', 'note F1', 'model - it', 'bits used'], quality)}"
        f"<h2>Generated music vs the data (test split)</h2>{_side_by_side(metrics)}"
        f"<h2>Diversity, copying, latent</h2>{_table(['metric', 'value'], others)}"
        f"<h2>Samples</h2>{''.join(items)}"
        "</body></html>\n"
    )


def _side_by_side(metrics: dict[str, float]) -> str:
    names = sorted({k.split(".", 1)[1] for k in metrics if k.split(".", 1)[0] in SIDES
                    and "/" not in k})
    rows = [[n, *(_fmt(metrics.get(f"{side}.{n}")) for side in SIDES),
             f"[{_fmt(metrics.get(f'gap.{n}.lo'))}, {_fmt(metrics.get(f'gap.{n}.hi'))}]",
             "constant: not gated" if metrics.get(f"constant.{n}") == 1.0 else ""] for n in names]
    return _table(["statistic", "generated", "data", "generated - data interval", ""], rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def baseline_rows(metrics: dict[str, float]) -> list[list[str]]:
    """The model, per track, and every baseline (the average-cell one included), with intervals."""
    def ci(key: str) -> str:
        return (f"{_fmt(metrics.get(key))} [{_fmt(metrics.get(key + '.lo'))}, "
                f"{_fmt(metrics.get(key + '.hi'))}]")

    rows = [["model", ci("recon_note_f1"), "–", f"KL {_fmt(metrics.get('kl_bits'))}"]]
    rows += [[f"model, {k.split('/', 1)[1]}", ci(k), "–", "–"] for k in sorted(metrics)
             if k.startswith("recon_note_f1/") and not k.endswith((".lo", ".hi"))]
    for name in BASELINES:
        rows.append([f"{name} baseline", ci(f"baseline.{name}.recon_note_f1"), ci(f"margin.{name}"),
                     _fmt(metrics.get(f"baseline.{name}.bits"))])
    rows.append(["frame F1 (model)", _fmt(metrics.get("recon_frame_f1")), "–", "–"])
    return rows
