"""`lpdvae register`: options here, the step (torch, mlflow) imported on run."""

from __future__ import annotations

import argparse
from pathlib import Path

from lpdvae.layout import CWD
from lpdvae.params import Params


def _cmd(args: argparse.Namespace, params: Params) -> int:
    from lpdvae.registry.lineage import git_revision
    from lpdvae.registry.lineage import lineage as lineage_tags
    from lpdvae.steps.register import register

    tags = lineage_tags(Path(args.raw), Path(args.validated), Path(args.tensors),
                        git_revision=git_revision(Path.cwd()), params_digest=params.digest(),
                        run_id=args.run_id, dvc_lock=Path(args.dvc_lock))
    r = register(Path(args.model), Path(args.eval), Path(args.out), params, tags,
                 tensor_dir=Path(args.tensors), report_dir=Path(args.report_dir),
                 validated=Path(args.validated), data_docs=Path(args.data_docs))
    if r.reused:
        print(f"training run {r.run_id} is already registered as {r.name} version {r.version}: reused it, "
              "no new version")
    print(f"registered {r.name} version {r.version} (aliases: {', '.join(r.aliases) or 'none'}; "
          f"blessed: {r.blessed})\n{r.verdict}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register the evaluated model in the MLflow registry",
                       description="Log the generator pyfunc, register a new model version with "
                       "lineage tags, and set challenger/champion aliases.")
    p.add_argument("--model", default=str(CWD.model), help="trained model folder (default: %(default)s)")
    p.add_argument("--eval", default=str(CWD.eval), help="evaluation folder (default: %(default)s)")
    p.add_argument("--out", default=str(CWD.registered), help="record file (default: %(default)s)")
    p.add_argument("--report-dir", default=str(CWD.register_report),
                   help="folder for promotion.json, the model card and the run summary (default: %(default)s)")
    for stage in ("raw", "validated", "tensors"):
        p.add_argument(f"--{stage}", default=str(getattr(CWD, stage)),
                       help=f"the {stage} data folder the model came from, hashed for lineage (default: %(default)s)"
                       + ("; its test split is where the champion is measured" if stage == "tensors" else ""))
    p.add_argument("--data-docs", default=str(CWD.data_docs),
                   help="validate's docs folder whose drift report is logged with the model (default: %(default)s)")
    p.add_argument("--dvc-lock", default="dvc.lock",
                   help="dvc.lock whose outputs are tagged too, when it exists (default: %(default)s)")
    p.add_argument("--run-id", default="local",
                   help="the pipeline run id tagged as lpdvae.pipeline_run_id (default: %(default)s)")
    p.set_defaults(func=_cmd)
