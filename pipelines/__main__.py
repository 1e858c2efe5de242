"""python -m pipelines compile | run --local | run --host URL | upload --host URL | schedule --host URL

The pipeline's parameter defaults come from `--params` (params.yaml). `--set KEY=VALUE` changes
a knob for this command: in `compile` it becomes the default, in `run`/`schedule` a run
parameter (the uploaded version keeps the file's defaults, so a version name always means the
same pipeline).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from lpdvae.params import Params, ParamsError, load_params, parse_override
from lpdvae.registry.lineage import git_revision

log = logging.getLogger("pipelines")
WEEKLY = "0 0 3 * * 1"  # KFP cron (seconds first): Mondays 03:00


def _params(args: argparse.Namespace, with_overrides: bool = True) -> Params:
    overrides = dict(parse_override(o) for o in args.overrides) if with_overrides else {}
    return load_params(args.params, overrides)


def _revision(args: argparse.Namespace) -> str:
    return git_revision(Path(args.params).resolve().parent) or ""


def _changed_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The knobs `--set` changed, as pipeline arguments."""
    from components.knobs import knob_values

    base, new = knob_values(_params(args, False)), knob_values(_params(args))
    return {k: v for k, v in new.items() if base[k] != v}


def _build(args: argparse.Namespace, params: Params):
    from pipelines.training import ClusterConfig, build_pipeline, parameter_descriptions

    cluster = ClusterConfig(gpus=args.gpus, use_gpu=not args.no_gpu, train_image=args.train_image)
    return build_pipeline(params, git_revision=_revision(args), cluster=cluster, fanout=not args.no_fanout,
                          image=args.image,
                          descriptions=parameter_descriptions(Path(args.params)))


def _warn_if_mutable(args: argparse.Namespace) -> None:
    from components.image import IMAGE, is_immutable

    for image in filter(None, (args.image or IMAGE, args.train_image)):
        if not is_immutable(image):
            log.warning("image %s is a mutable tag: a later push under it changes what this pipeline runs; "
                        "build with `make image` and compile against its tag or digest", image)


def _compile_to(args: argparse.Namespace, params: Params, out: Path) -> Path:
    from kfp import compiler

    _warn_if_mutable(args)

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(_build(args, params), package_path=str(out))
    return out


def cmd_compile(args: argparse.Namespace) -> int:
    out = _compile_to(args, _params(args), Path(args.out))
    print(f"compiled {out}")
    return 0


def _uploaded(args: argparse.Namespace, client):
    """The version to run or schedule: `--version` (a name or `latest`), else this revision
    uploaded (after checking the backend can run it: `remote.check_server`)."""
    import tempfile

    from pipelines import remote

    if args.version:
        return remote.find_version(client, args.name, args.version, args.namespace)
    remote.check_server(client, args.host, args.namespace)
    with tempfile.TemporaryDirectory() as tmp:
        package = _compile_to(args, _params(args, False), Path(tmp) / "pipeline.yaml")
        rev = _revision(args)
        up = remote.upload(client, str(package), args.name, remote.version_name(rev, remote.package_digest(package)),
                           f"lpdvae training pipeline, git revision {rev or 'unknown'}", args.namespace)
    print(f"{'uploaded' if up.created else 'found'} pipeline {args.name} ({up.pipeline_id}) "
          f"version {up.version_name} ({up.version_id})")
    return up


def cmd_upload(args: argparse.Namespace) -> int:
    from pipelines import remote

    if args.overrides:
        raise SystemExit("upload: --set is not allowed (a version is named by its git revision); "
                         "change params.yaml, or pass --set to run/schedule")
    _uploaded(args, remote.connect(args.host, args.namespace))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.local == bool(args.host):
        raise SystemExit("run: give exactly one of --local or --host URL")
    if args.local:
        from pipelines.local import run_local

        run_local(_params(args, False), Path(args.pipeline_root), _revision(args), **_changed_knobs(args))
        print(f"pipeline finished; artifacts under {args.pipeline_root}")
        return 0
    from pipelines import remote

    client = remote.connect(args.host, args.namespace)
    up = _uploaded(args, client)
    run_id = remote.run(client, up, args.experiment, args.run_name, _changed_knobs(args), args.namespace,
                        args.service_account)
    print(f"started run {run_id} of {up.version_name} in experiment {args.experiment}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipelines import remote

    cron = remote.cron_with_seconds(args.cron)
    client = remote.connect(args.host, args.namespace)
    up = _uploaded(args, client)  # each scheduled run re-reads the source: ingest_refresh_key=[[ScheduledTime]]
    job_id = remote.schedule(client, up, args.experiment, args.job_name, cron, _changed_knobs(args),
                             args.namespace, args.service_account)
    print(f"scheduled recurring run {args.job_name} ({job_id}): {up.version_name}, cron '{cron}', "
          f"experiment {args.experiment}")
    return 0


def _build_options() -> argparse.ArgumentParser:
    """Options that shape the compiled pipeline (images, GPUs, fan-out)."""
    build = argparse.ArgumentParser(add_help=False)
    g = build.add_argument_group("pipeline build")
    g.add_argument("--image", default=None, help="image of every task: a tag or REPO@sha256:DIGEST "
                   "(default: $LPDVAE_IMAGE or the release image); `make compile` passes build/image-cpu.ref")
    g.add_argument("--train-image", default=os.environ.get("LPDVAE_TRAIN_IMAGE"),
                   help="image of the train task and its TrainJobs (default: $LPDVAE_TRAIN_IMAGE, else on GPU "
                   "clusters the image's tag + '-cuda'; required with a digest --image)")
    g.add_argument("--gpus", type=int, default=None, help="GPUs of the train task (default: train.nproc, per run)")
    g.add_argument("--no-gpu", action="store_true", help="no GPU request, toleration or node selector (CPU clusters)")
    g.add_argument("--no-fanout", action="store_true", help="one validate and one tensorize task instead of chunks + merge")
    return build


def _remote_options() -> argparse.ArgumentParser:
    """Options that name the Kubeflow Pipelines endpoint, pipeline and experiment."""
    remote_opts = argparse.ArgumentParser(add_help=False)
    r = remote_opts.add_argument_group("Kubeflow Pipelines")
    r.add_argument("--host", help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline "
                   "(token: $KFP_TOKEN or the pod's service-account token)")
    r.add_argument("--name", default="lpdvae-training", help="pipeline name (default: %(default)s)")
    r.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")
    r.add_argument("--experiment", default="lpdvae", help="experiment of runs (default: %(default)s)")
    r.add_argument("--service-account", default=None, help="service account of the run's pods, e.g. lpdvae-pipeline")
    r.add_argument("--version", default=None,
                   help="an existing version name, or 'latest'; default: upload this git revision first")
    return remote_opts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file for the defaults (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change one knob, e.g. --set train.epochs=20 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true")

    common = argparse.ArgumentParser(add_help=False)  # also accepted after the command
    common.add_argument("--params", default=argparse.SUPPRESS, help="params file for the defaults")
    common.add_argument("--set", dest="overrides", action="append", default=argparse.SUPPRESS,
                        metavar="KEY=VALUE", help="change one knob (repeatable)")

    build, remote_opts = _build_options(), _remote_options()

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser("compile", parents=[common, build], help="write the pipeline IR YAML",
                       description="Compile the pipeline (every params knob a parameter) to KFP IR YAML.")
    c.add_argument("--out", default="pipeline.yaml", help="output file (default: %(default)s)")
    c.set_defaults(func=cmd_compile)

    rn = sub.add_parser("run", parents=[common, build, remote_opts], help="run the pipeline: --local, or on --host",
                        description="--local: the whole pipeline with kfp.local on this machine (tasks are "
                        "subprocesses; MLflow defaults to ./mlflow.db). --host: one run on Kubeflow Pipelines.")
    rn.add_argument("--local", action="store_true", help="run here with kfp.local (SubprocessRunner)")
    rn.add_argument("--pipeline-root", default="build/kfp-local", help="kfp.local artifact root (default: %(default)s)")
    rn.add_argument("--run-name", default="lpdvae-training", help="name of the remote run (default: %(default)s)")
    rn.set_defaults(func=cmd_run)

    u = sub.add_parser("upload", parents=[common, build, remote_opts], help="create the pipeline or a new version",
                       description="Create the pipeline, or add a version named from the git revision and "
                       "the compiled content (git-<sha12>-<content12>; one already uploaded is left as is).")
    u.set_defaults(func=cmd_upload)

    s = sub.add_parser("schedule", parents=[common, build, remote_opts], help="recurring run (weekly by default)",
                       description="Upload this revision (or take --version) and (re)create a recurring run "
                       "of it in the experiment; one run at a time, no catch-up.")
    s.add_argument("--cron", default=WEEKLY, help="KFP cron with seconds, or a 5-field crontab line "
                   "(default: '%(default)s', Mondays 03:00)")
    s.add_argument("--job-name", default="lpdvae-weekly-retraining", help="recurring run name (default: %(default)s)")
    s.set_defaults(func=cmd_schedule)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command in ("upload", "schedule") and not args.host:
        parser.error(f"{args.command}: --host is required")
    try:
        return args.func(args)
    except ParamsError as exc:
        print(f"pipelines: params error: {exc}", file=sys.stderr)
        return 2
    except (LookupError, ValueError) as exc:
        print(f"pipelines {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
