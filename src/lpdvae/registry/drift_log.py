"""Drift into MLflow: the train run keeps the data it was trained on and this run's drift report.

`log_drift` runs inside the model's (train) run when register logs the model: the validated
folder becomes the run's `validated/` artifact (what a later run's drift check reads when the
DVC cache and remote do not have it: `lpdvae.validation.drift_reference`), the drift report the run's
`drift/` artifact, and its verdict the run tag `lpdvae.drift.verdict`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
ARTIFACT_DIR = "validated"  # the train run's artifact folder holding the validated data it was trained on
TAG_VERDICT = "lpdvae.drift.verdict"
REPORT_FILES = ("drift.json", "drift.html")


def log_drift(validated: Path, docs_dir: Path | None) -> str | None:
    """Log into the active MLflow run; returns the drift verdict (None: no report in `docs_dir`)."""
    import mlflow

    mlflow.log_artifacts(str(validated), ARTIFACT_DIR)
    report = Path(docs_dir) / "drift.json" if docs_dir is not None else None
    if report is None or not report.exists():
        return None
    for name in REPORT_FILES:
        if (report.parent / name).exists():
            mlflow.log_artifact(str(report.parent / name), "drift")
    verdict = str(json.loads(report.read_text()).get("verdict", ""))
    mlflow.set_tag(TAG_VERDICT, verdict)
    log.info("drift verdict %s logged to the run", verdict)
    return verdict
