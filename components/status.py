"""record status: the pipeline's exit handler, which runs however the run ended."""

from kfp import dsl

from components.image import step_component


@step_component
def record_status_op(status: dsl.PipelineTaskFinalStatus, experiment: str, tracking_uri: str, git_revision: str,
                     pipeline_run_id: str = "", delete_trainjobs: bool = False):
    """On a failed (or cancelled) run: first delete the run's unfinished TrainJobs
    (`delete_trainjobs`, in this pod's namespace `POD_NAMESPACE`: nothing waits on them any more
    and they hold their GPU nodes until their deadline), then an MLflow run marked FAILED in
    `experiment` with the KFP run, the failing task and its error. A successful run records
    nothing (train, evaluate and register logged it already). `tracking_uri` empty: the pod's
    MLFLOW_TRACKING_URI. Deleting comes first: a retry of this task after an MLflow error must
    not have left GPUs held, and a retry after a Kubernetes error records the run only once."""
    import os

    from components.runtime import record_failed_run

    if status.state == "SUCCEEDED":
        print(f"pipeline {status.pipeline_job_resource_name} succeeded")
        return
    if delete_trainjobs:
        from components.trainjob_api import cleanup_run, custom_objects_api

        deleted = cleanup_run(custom_objects_api(), os.environ["POD_NAMESPACE"], pipeline_run_id)
        print(f"deleted the run's unfinished TrainJobs: {', '.join(deleted) or 'none'}")
    run_id = record_failed_run(status.pipeline_job_resource_name, status.state, status.error_message or "",
                               status.pipeline_task_name, experiment, tracking_uri, git_revision)
    print(f"pipeline {status.pipeline_job_resource_name} ended {status.state}: recorded as MLflow run {run_id}")
