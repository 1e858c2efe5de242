"""record status: the pipeline's exit handler, which runs however the run ended."""

from kfp import dsl

from components.image import step_component


@step_component
def record_status_op(status: dsl.PipelineTaskFinalStatus, experiment: str, tracking_uri: str, git_revision: str):
    """On a failed (or cancelled) run, an MLflow run marked FAILED in `experiment` with the KFP
    run, the failing task and its error; a successful run records nothing (train, evaluate and
    register logged it already). `tracking_uri` empty: the pod's MLFLOW_TRACKING_URI."""
    from components.runtime import record_failed_run

    if status.state == "SUCCEEDED":
        print(f"pipeline {status.pipeline_job_resource_name} succeeded")
        return
    run_id = record_failed_run(status.pipeline_job_resource_name, status.state, status.error_message or "",
                               status.pipeline_task_name, experiment, tracking_uri, git_revision)
    print(f"pipeline {status.pipeline_job_resource_name} ended {status.state}: recorded as MLflow run {run_id}")
