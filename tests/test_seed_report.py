"""benchmarks.seed_report: several seeds' runs in one table, read from their own outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.seed_report import main

from .conftest import REPO


def fake_run(root: Path, seed: int, blessed: bool) -> Path:
    """A project root with the files a finished `make run` leaves, figures made up per seed."""
    (root / "reports/eval").mkdir(parents=True)
    (root / "models/vae").mkdir(parents=True)
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    text = (root / "params.yaml").read_text().replace("  seed: 1234 ", f"  seed: {seed} ", 1)
    (root / "params.yaml").write_text(text)
    m = {"recon_note_f1": 0.5 + seed / 100, "recon_note_f1.lo": 0.45, "recon_note_f1.hi": 0.55,
         "baseline.copy_per_voice.recon_note_f1": 0.44, "margin.copy_per_voice.lo": 0.03,
         "generated.tonal_distance": 1.6, "reference.tonal_distance": 1.5, "gap.tonal_distance.lo": 0.05,
         "gap.tonal_distance.hi": 0.15, "split_gap.tonal_distance": 0.04, "recon_note_f1/soprano": 0.6,
         "copy.median_best_match": 0.3, "copy.val_floor": 0.26, "kl_bits": 138.0, "temperature": 0.5}
    (root / "reports/eval/metrics.json").write_text(json.dumps(m))
    (root / "reports/eval/blessing.json").write_text(json.dumps({"blessed": blessed, "reasons": [] if blessed else ["x"]}))
    (root / "models/vae/train_metrics.json").write_text(json.dumps({"train_time_s": 240.0, "steps": 1100}))
    return root


def test_each_seed_is_a_row_with_its_verdict_and_the_allowed_gap_includes_the_split_gap(tmp_path: Path) -> None:
    roots = [fake_run(tmp_path / f"s{s}", s, s != 2) for s in (1, 2)]
    assert main(["--root", f"{roots[0]}=361.5", "--root", str(roots[1]), "--out-dir", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out/seeds-demo.json").read_text())
    assert [(r["seed"], r["blessed"], r["wall_s"]) for r in rows] == [(1, True, 361.5), (2, False, None)]
    assert abs(rows[0]["statistics"]["tonal_distance"]["allowed"] - (0.15 + 0.04)) < 1e-9
    md = (tmp_path / "out/seeds-demo.md").read_text()
    assert "| 1 | yes | 361.500 |" in md and "| 2 | NO |" in md


def test_a_root_without_a_finished_run_is_one_line_naming_the_file(tmp_path: Path, capsys) -> None:
    assert main(["--root", str(tmp_path), "--out-dir", str(tmp_path / "out")]) == 1
    assert "metrics.json: missing" in capsys.readouterr().err


def test_a_profile_run_without_its_own_params_file_is_read_with_the_profile(tmp_path: Path) -> None:
    root = fake_run(tmp_path / "full", 1234, True)
    (root / "params.yaml").unlink()  # `lpdvae --profile ... run --root DIR` leaves none
    profile = tmp_path / "p.yaml"
    profile.write_text("train:\n  seed: 99\n")
    assert main(["--root", str(root), "--profile", str(profile), "--name", "full", "--out-dir", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out/seeds-full.json").read_text())[0]["seed"] == 99
