"""A service as the Kubernetes objects that would run it on a cluster.

``service_manifests`` turns a service's catalog record (its image, instance family, requests, MIN
and MAX instances, ingress) into plain dicts, one per object, in the order ``kubectl apply`` wants:

- ``Namespace`` ``<database>-<schema>`` (lower case, DNS labels), where the service's objects live;
- ``Deployment``: the inference server from the service's image (pinned by digest when the build
  pushed one), port 5000 named ``http``, readiness on ``/ready`` (503 until every worker loaded the
  model), liveness on ``/healthz``, a startup probe that gives a slow model load five minutes;
  resources from ``cpu_requests``/``memory_requests`` or the instance family (below), GPUs as
  ``nvidia.com/gpu``; a rolling update that starts a new pod before stopping an old one
  (``maxSurge: 1, maxUnavailable: 0``), as Swarm's start-first; pods spread over nodes;
- ``Service`` (ClusterIP, port 5000): what service functions call;
- ``HorizontalPodAutoscaler`` (autoscaling/v2) between MIN_INSTANCES and MAX_INSTANCES on CPU;
- ``PodDisruptionBudget``: a drain takes at most one instance at a time;
- ``Ingress`` for a service with ``ingress_enabled``: its public endpoint.

Node selection: the pool's nodes carry the label ``duckserve.io/compute-pool=<pool>`` (as Swarm
nodes do for RUNTIME = 'SWARM' pools), and the Deployment's ``nodeSelector`` asks for it; a GPU
family also tolerates the ``nvidia.com/gpu`` taint GPU node pools carry.

Resources, as the Docker and Swarm runtimes apply them: given requests are requests and limits;
without them an instance requests 90% of its family's vCPU and memory (one instance per node, the
rest left to the node's own daemons) and is limited to the family's size.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from duckserve.engine.catalog import CatalogObject
from duckserve.engine.families import FAMILIES
from duckserve.engine.runtimes import INSTANCE_PORT
from duckserve.engine.services.instances import DEFAULT_MAX_QUEUE, DEFAULT_REQUEST_TIMEOUT, memory_bytes

#: the node label naming the compute pool a node belongs to (Kubernetes and Swarm alike)
POOL_LABEL = "duckserve.io/compute-pool"
#: the Kubernetes version the manifests are written for and validated against
KUBERNETES_VERSION = "1.37.0"
#: without requests, an instance asks for this share of its family's node
DEFAULT_REQUEST_SHARE = 0.9
GPU_RESOURCE = "nvidia.com/gpu"


def dns_label(text: str, limit: int = 63) -> str:
    """``text`` as a DNS-1123 label: lower case letters, digits and '-', starting and ending
    alphanumeric (``FORECAST_SVC`` becomes ``forecast-svc``)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return label or "x"


def _quantity_cpu(cores: float) -> str:
    millis = max(1, math.floor(cores * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def _quantity_memory(size: int) -> str:
    mib = max(1, size // 2**20)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def resources_of(props: dict[str, Any], family_name: str) -> dict[str, Any]:
    """The container's ``resources``: requests and limits for CPU, memory and GPUs."""
    family = FAMILIES[family_name]
    family_memory = family.memory_gib * 2**30
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if props.get("cpu_requests"):
        requests["cpu"] = limits["cpu"] = _quantity_cpu(float(props["cpu_requests"]))
    else:
        requests["cpu"] = _quantity_cpu(family.vcpu * DEFAULT_REQUEST_SHARE)
        limits["cpu"] = _quantity_cpu(family.vcpu)
    given_memory = memory_bytes(props.get("memory_requests"))
    if given_memory:
        requests["memory"] = limits["memory"] = _quantity_memory(given_memory)
    else:
        requests["memory"] = _quantity_memory(int(family_memory * DEFAULT_REQUEST_SHARE))
        limits["memory"] = _quantity_memory(family_memory)
    gpus = int(props.get("gpu_requests") or 0)
    if gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def _image(service: CatalogObject) -> tuple[str, str]:
    """The image the pods run and a note when the service's build did not push one."""
    p = service.props
    if p.get("image_reference"):
        return p["image_reference"], ""
    return str(p.get("image") or ""), (
        "the service runs on a PROCESS pool, so its build made an environment, not an image: deploy it on a "
        "pool with RUNTIME = 'DOCKER' or 'SWARM' to push this image to the repository before applying"
    )


def _server_args(p: dict[str, Any]) -> list[str]:
    """The inference server's arguments after the image's entrypoint (its Python). No idle
    timeout: the HorizontalPodAutoscaler, not the server, decides how many instances run."""
    return ["-m", "duckserve.inference_server", "--workers", str(p.get("num_workers") or 1),
            "--max-queue", str(p.get("max_queue", DEFAULT_MAX_QUEUE)),
            "--request-timeout", str(DEFAULT_REQUEST_TIMEOUT)]


def service_manifests(service: CatalogObject, family_name: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of ``service``, whose pool has the instance family ``family_name``."""
    p = service.props
    name = dns_label(service.name)
    namespace = dns_label(f"{service.database}-{service.schema}")
    pool = dns_label(str(p.get("compute_pool", "")))
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": f"{namespace}.{name}"[:63]}
    labels = {**selector, "app.kubernetes.io/component": "model-inference",
              "app.kubernetes.io/managed-by": "duckserve", POOL_LABEL: pool}
    image, image_note = _image(service)
    annotations = {"duckserve.io/service": service.key, "duckserve.io/model": str(p.get("model")),
                   "duckserve.io/version": str(p.get("version"))}
    if image_note:
        annotations["duckserve.io/image-note"] = image_note
    metadata = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    family = FAMILIES[family_name]
    gpus = int(p.get("gpu_requests") or 0)
    port = {"name": "http", "containerPort": INSTANCE_PORT, "protocol": "TCP"}

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2,
                "failureThreshold": failures}

    container: dict[str, Any] = {
        "name": "model-inference", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": _server_args(p),
        "env": [
            {"name": "DUCKSERVE_HOST", "value": "0.0.0.0"},
            {"name": "DUCKSERVE_PORT", "value": str(INSTANCE_PORT)},
            {"name": "DUCKSERVE_SERVICE", "value": service.key},
            {"name": "DUCKSERVE_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        ],
        "ports": [port],
        "resources": resources_of(p, family_name),
        "startupProbe": probe("/healthz", 5, 60),
        "readinessProbe": probe("/ready", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "securityContext": {"allowPrivilegeEscalation": False},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}],
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "nodeSelector": {POOL_LABEL: pool},
        "terminationGracePeriodSeconds": 30,
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}},
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}],
    }
    if family.is_gpu:
        pod_spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    if gpus:
        annotations["duckserve.io/gpu-type"] = family.gpu_type
    min_instances = int(p.get("min_instances") or 1)
    max_instances = max(int(p.get("max_instances") or 1), min_instances)
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": {"app.kubernetes.io/managed-by": "duckserve"}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
         "spec": {"replicas": min_instances, "revisionHistoryLimit": 3,
                  "selector": {"matchLabels": selector},
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                  "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
         "spec": {"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "http", "port": INSTANCE_PORT, "targetPort": "http", "protocol": "TCP"}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                  "minReplicas": min_instances, "maxReplicas": max_instances,
                  "metrics": [{"type": "Resource", "resource": {
                      "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata,
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}},
    ]
    if p.get("ingress_enabled"):
        objects.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {**metadata, "annotations": {
                **annotations,
                "duckserve.io/authentication": "every request needs a programmatic access token "
                                               "(Authorization: Bearer <secret>); put an authenticating "
                                               "proxy (duckserve.fronts.ingress) in front of the Service"}},
            "spec": {"rules": [{"http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": name, "port": {"name": "http"}}}}]}}]},
        })
    return objects


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """The objects as one YAML stream (``---`` between documents), as ``kubectl apply -f`` reads it."""
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
