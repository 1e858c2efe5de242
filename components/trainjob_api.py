"""The TrainJob lifecycle on the Kubernetes API, the way the Kubeflow SDK's TrainerClient runs it.

The SDK (`kubeflow.trainer`, `TrainerClient`) is not a dependency of the image: it pulls a second
generated API model package for four REST calls. This client keeps the SDK's behaviour instead:

- a fresh name per submission (the SDK: a random letter + 11 hex of a uuid4; here the run's hash
  + a random suffix, so a job is traceable to its pipeline run by name as well as by label). A
  retried step after a Failed job therefore submits a new job, never 409s into the failed one;
- `delete_namespaced_custom_object` to stop a job (the SDK's `delete_job`): the exit handler
  deletes every unfinished job of a run that did not succeed, the step deletes a job that outran
  its own wait;
- one addition the SDK has no need for: a retried step first looks for this run's jobs (label
  `RUN_LABEL`) and waits on one still running, or takes the model of one that completed, so a
  lost launcher pod does not throw away hours of training.

`VERBS` is what this module calls; the Role in infra/k8s/runner/rbac.yaml grants exactly these
(tests/test_trainjob.py compares both ways against what the calls send to a fake API server).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from typing import Any

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
ARGO_GROUP, ARGO_VERSION, WORKFLOWS = "argoproj.io", "v1alpha1", "workflows"
RUN_LABEL = "pipelines.lpdvae.dev/run-id"
# (apiGroup, resource, verb) of every call below: the Role must grant these and nothing more
VERBS = {(GROUP, PLURAL, "create"), (GROUP, PLURAL, "get"), (GROUP, PLURAL, "list"), (GROUP, PLURAL, "delete"),
         (ARGO_GROUP, WORKFLOWS, "get")}
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


class TrainJobFailed(RuntimeError):
    """The TrainJob ended Failed (or never ended in time); the message carries its reason."""


def run_label(run_id: str) -> str:
    """The run id as a label value (KFP run ids are UUIDs, valid as they are; anything else hashed)."""
    return run_id if _LABEL_VALUE.fullmatch(run_id) else hashlib.sha256(run_id.encode()).hexdigest()[:40]


def attempt_name(run_id: str, task: str = "train") -> str:
    """A new DNS-1035 name for each submission: the run's hash (which run) + 6 random hex (which try)."""
    return f"lpdvae-{task}-{hashlib.sha256(run_id.encode()).hexdigest()[:12]}-{secrets.token_hex(3)}"


def custom_objects_api() -> Any:
    """CustomObjectsApi of this pod's cluster (its service account), or of `$LPDVAE_KUBE_API`
    (a `kubectl proxy` URL such as http://127.0.0.1:8001)."""
    from kubernetes import client, config

    if url := os.environ.get("LPDVAE_KUBE_API"):
        conf = client.Configuration()
        conf.host = url
        return client.CustomObjectsApi(client.ApiClient(conf))
    config.load_incluster_config()
    return client.CustomObjectsApi()


def condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition `kind` (Complete, Failed, ...) of a TrainJob when it is True."""
    for c in job.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def state(job: dict[str, Any]) -> str:
    """Complete, Failed, or Active (anything not finished: created, suspended by Kueue, running)."""
    return next((k for k in ("Complete", "Failed") if condition(job, k)), "Active")


def workflow_owner(api: Any, namespace: str, workflow: str | None) -> dict[str, Any] | None:
    """An ownerReference to the run's Argo Workflow, so deleting the run (or Argo's TTL on it)
    lets Kubernetes' garbage collector delete the TrainJob and its pods. The workflow is the
    owner, not this pod: a retried step runs in a new pod, and the job outlives the old one."""
    from kubernetes.client.exceptions import ApiException

    if not workflow:
        log.warning("no Argo workflow label on this pod: the TrainJob gets no ownerReference")
        return None
    try:
        wf = api.get_namespaced_custom_object(ARGO_GROUP, ARGO_VERSION, namespace, WORKFLOWS, workflow)
    except ApiException as exc:
        log.warning("workflow %s/%s not readable (HTTP %s): no ownerReference", namespace, workflow, exc.status)
        return None
    return {"apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}", "kind": "Workflow", "name": workflow,
            "uid": wf["metadata"]["uid"], "blockOwnerDeletion": False}


def run_jobs(api: Any, namespace: str, run_id: str) -> list[dict[str, Any]]:
    """This run's TrainJobs, oldest first."""
    found = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                              label_selector=f"{RUN_LABEL}={run_label(run_id)}")
    return sorted(found.get("items", []), key=lambda j: j["metadata"].get("creationTimestamp", ""))


def reusable(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest job a retried step should wait on or take the model of: one still running or
    completed. A Failed one is not: its retry submits a new job."""
    for job in reversed(jobs):
        if state(job) != "Failed":
            return job
    return None


def create(api: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Create the TrainJob; every refusal is a TrainJobFailed naming the API's reason."""
    from kubernetes.client.exceptions import ApiException

    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        created = api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
    except ApiException as exc:
        raise TrainJobFailed(f"TrainJob {ns}/{name} was not created: HTTP {exc.status} {exc.reason}: "
                             f"{(exc.body or '')[:500]}") from exc
    log.info("submitted TrainJob %s/%s (%d nodes)", ns, name, manifest["spec"]["trainer"]["numNodes"])
    return created


def delete(api: Any, namespace: str, name: str) -> bool:
    """Delete a TrainJob (its JobSet and pods go with it, in the background); False if it was gone."""
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            propagation_policy="Background")
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    log.info("deleted TrainJob %s/%s", namespace, name)
    return True


def wait(api: Any, namespace: str, name: str, timeout_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    """Poll until the TrainJob is Complete; raise TrainJobFailed with its reason when it fails,
    is deleted (a cancelled run), or `timeout_s` passes first (then the job is deleted: a job
    past every deadline holds its GPUs for nothing, e.g. a Trainer < 2.2 that ignores
    activeDeadlineSeconds)."""
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                raise TrainJobFailed(f"TrainJob {namespace}/{name} was deleted before it completed") from exc
            raise
        if (now := state(job)) == "Complete":
            log.info("TrainJob %s/%s is Complete", namespace, name)
            return job
        if now == "Failed":
            failed = condition(job, "Failed") or {}
            raise TrainJobFailed(f"TrainJob {namespace}/{name} failed: {failed.get('reason', 'no reason')}: "
                                 f"{failed.get('message', '')}".rstrip(": "))
        if time.monotonic() >= deadline:
            delete(api, namespace, name)
            raise TrainJobFailed(f"TrainJob {namespace}/{name} did not complete within {timeout_s:.0f} s "
                                 "(deleted it)")
        time.sleep(poll_s)


def cleanup_run(api: Any, namespace: str, run_id: str) -> list[str]:
    """Delete every TrainJob of the run that has not completed (the exit handler of a failed or
    cancelled run: nothing waits on them any more, and a running one holds its nodes until its
    deadline). Returns their names. A cluster without the Trainer's CRDs has none to delete."""
    from kubernetes.client.exceptions import ApiException

    try:
        jobs = run_jobs(api, namespace, run_id)
    except ApiException as exc:
        if exc.status == 404:  # no trainjobs resource here: nothing was ever submitted
            return []
        raise
    return [j["metadata"]["name"] for j in jobs
            if state(j) != "Complete" and delete(api, namespace, j["metadata"]["name"])]
