"""python -m pipelines compile | run --local | upload --host URL | schedule --host URL --cron EXPR"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("pipelines")


def cmd_compile(args: argparse.Namespace) -> int:
    from kfp import compiler

    from pipelines.training import ClusterConfig, build_pipeline

    cluster = None if args.no_gpu else ClusterConfig(gpus=args.gpus)
    compiler.Compiler().compile(build_pipeline(args.params, cluster), package_path=args.out)
    print(f"compiled {args.out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not args.local:
        print("only --local runs here; use `upload` + the KFP UI or `schedule` for a cluster", file=sys.stderr)
        return 2
    from pipelines.local import run_local

    outputs = run_local(args.params, Path(args.pipeline_root))
    print(f"pipeline finished: {outputs}")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    from pipelines.remote import upload

    pipeline_id, version_id, version_name = upload(args.host, args.params, args.name)
    print(f"uploaded pipeline {pipeline_id} version {version_name} ({version_id})")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipelines.remote import schedule

    job_id = schedule(args.host, args.params, args.cron, args.experiment, args.job_name)
    print(f"scheduled recurring run {job_id} ({args.cron}) in experiment {args.experiment}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file for the defaults")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compile", help="write the KFP IR YAML")
    c.add_argument("--out", default="pipeline.yaml")
    c.add_argument("--gpus", type=int, default=1, help="GPUs requested by the train task")
    c.add_argument("--no-gpu", action="store_true", help="no GPU request / cluster env (CPU clusters)")
    c.set_defaults(func=cmd_compile)
    r = sub.add_parser("run", help="run the whole pipeline with kfp.local (SubprocessRunner)")
    r.add_argument("--local", action="store_true", help="run on this machine (required)")
    r.add_argument("--pipeline-root", default="build/kfp-local", help="where kfp.local keeps artifacts")
    r.set_defaults(func=cmd_run)
    u = sub.add_parser("upload", help="create the pipeline, or a new version named from the git revision")
    u.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example/pipeline")
    u.add_argument("--name", default=None, help="pipeline name (default: lpdvae-training)")
    u.set_defaults(func=cmd_upload)
    s = sub.add_parser("schedule", help="create a recurring run (weekly retraining by default)")
    s.add_argument("--host", required=True)
    s.add_argument("--cron", default="0 0 3 * * 1", help="KFP cron with seconds (default: Mondays 03:00)")
    s.add_argument("--experiment", default="lpdvae")
    s.add_argument("--job-name", default="lpdvae-weekly-retraining")
    s.set_defaults(func=cmd_schedule)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
