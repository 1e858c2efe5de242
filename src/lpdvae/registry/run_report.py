"""The one summary an unattended run ends with: was the new version promoted, and why.

Register writes it (`summary.md` in its report folder); `lpdvae run` prints it, the KFP register
task shows it as a Markdown artifact, and `lpdvae registry list` shows its first line per version.
"""

from __future__ import annotations

from typing import Any


def render_summary(*, name: str, version: str, aliases: list[str], blessed: bool, blessing_reasons: list[str],
                   promotion: dict[str, Any], champion_before: str | None, champion_after: str | None,
                   tags: dict[str, str], card: str) -> str:
    """Markdown: the verdict first, then the comparison, the reasons and where the card is."""
    verdict = "promoted" if promotion.get("promoted") else "not promoted"
    lines = [f"# {name} version {version}: {verdict}", "", f"**{promotion.get('summary', verdict)}**", "",
             f"- blessed by evaluation: {'yes' if blessed else 'no: ' + '; '.join(blessing_reasons)}",
             f"- aliases: {', '.join(aliases) or 'none'}",
             f"- champion: v{champion_after}" + (f" (was v{champion_before})" if champion_before
                                                 and champion_before != champion_after else "")
             if champion_after else "- champion: none"]
    champ = promotion.get("champion")
    if champ:
        d = champ["recon_note_f1"]["difference"]
        lines.append(f"- recon note F1 {champ['recon_note_f1']['challenger']:.4f} vs champion "
                     f"v{champ['version']}'s {champ['recon_note_f1']['champion']:.4f}: difference "
                     f"{d['estimate']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] ({d['confidence']:.0%}, "
                     f"{d['resamples']} resamples) on evaluation set `{champ['evaluation_set'][:16]}…`")
    lines += [f"- data: tensors `{tags.get('lpdvae.dvc.tensors', 'n/a')}` from `{tags.get('lpdvae.source', 'n/a')}`; "
              f"pipeline run `{tags.get('lpdvae.pipeline_run_id', 'n/a')}`",
              f"- model card: {card}", "", "## Why", ""]
    lines += [f"- {r}" for r in promotion.get("reasons", [])]
    return "\n".join(lines) + "\n"
