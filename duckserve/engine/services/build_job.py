"""The MODEL_BUILD job: build (or reuse) what a service's instances run, and record it as an image.

A job is a catalog object of its own (``SHOW SERVICES`` lists it beside its service) with a
``model-build`` log. For a compute pool on the process runtime it builds the model's environment
with uv (``environments``); the image recorded in the repository names that environment.
"""

from __future__ import annotations

import logging
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from duckserve.engine import access as A
from duckserve.engine.account import Account, Session, display_key
from duckserve.engine.catalog import CatalogObject, now
from duckserve.engine.environments import EnvironmentBuilder, EnvironmentSpec
from duckserve.engine.images.repositories import repository_url
from duckserve.engine.runtimes import Artifact
from duckserve.engine.services.gpus import host_gpus, runs_on_cpu_only
from duckserve.errors import BuildError, Error, OperationalError

logger = logging.getLogger("duckserve.engine")

JOB = "JOB"
LOG_CONTAINER = "model-build"


def job_name() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "MODEL_BUILD_" + "".join(secrets.choice(alphabet) for _ in range(5))


@dataclass
class BuildResult:
    """What a finished job gives the service: its name, the image, and how instances run it."""

    job: str
    image: str  # the image's path in the repository
    artifact: Artifact
    built: bool  # False when the environment or image existed and the build was skipped
    props: dict[str, Any]  # what the service records of it (environment key, image digest, ...)


class BuildJobs:
    """Runs MODEL_BUILD jobs of one account."""

    def __init__(self, account: Account, root: Path) -> None:
        self.account = account
        self.root = root
        self.builder = EnvironmentBuilder(account.home)

    def log_path(self, name: str) -> Path:
        return self.root / name / f"{LOG_CONTAINER}.log"

    def find(self, name: str) -> CatalogObject | None:
        found = self.account.catalog.objects(JOB, name=name)
        return found[0] if found else None

    def run(self, session: Session, model: CatalogObject, version: str, manifest: Any, package: Path,
            repo: CatalogObject, pool: CatalogObject, build_pool: str | None, force: bool, gpus: int = 0
            ) -> BuildResult:
        name = job_name()
        log_path = self.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        job = CatalogObject(JOB, name, owner=session.role, database=repo.database, schema=repo.schema,
                            props={"status": "RUNNING", "log_path": str(log_path), "model": model.key,
                                   "version": version, "compute_pool": (build_pool or pool.name).upper(),
                                   "started_on": now().isoformat()})
        self.account.catalog.insert(job)
        if gpus and runs_on_cpu_only(manifest):
            # the seed: a model of a type known to run on CPU only fails its image build when GPUs are requested
            self._fail(job, f"model {display_key(model)} version {version} is a {manifest.handler} model, which runs "
                            f"on CPU only: the image build fails when GPUs are requested (gpu_requests={gpus}); "
                            "call create_service without gpu_requests")
        # a GPU service on a host with NVIDIA GPUs gets the index's CUDA builds; every other one CPU builds
        spec = EnvironmentSpec.from_manifest(manifest, accelerator="gpu" if gpus and host_gpus() else "cpu")
        if pool.props.get("runtime") in ("docker", "swarm"):  # engines that run images
            return self._image(session, job, model, version, spec, repo, package, force)
        try:
            environment = self.builder.build(spec, log_path, force=force)
        except BuildError as exc:
            self._fail(job, str(exc), exc)
        image_name = f"{model.name}_{version}".lower()
        tag = environment.key[:12]
        image_path = f"{repository_url(self.account.home, repo)}/{image_name}:{tag}"
        image_key = f"{repo.name}/{image_name}:{tag}"
        if self.account.catalog.get(A.IMAGE, image_key, repo.database, repo.schema) is None:
            self.account.catalog.insert(CatalogObject(
                A.IMAGE, image_key, owner=session.role, database=repo.database, schema=repo.schema,
                props={"repository": repo.name, "image_name": image_name, "tag": tag,
                       "digest": f"sha256:{environment.key}", "image_path": image_path,
                       "env_key": environment.key, "env_path": str(environment.path)}))
        job.props.update(status="DONE", finished_on=now().isoformat(), image=image_path,
                         reused=environment.reused, seconds=round(environment.seconds, 3),
                         warnings=environment.warnings)
        self.account.catalog.update(job)
        self._keep_log(job)
        return BuildResult(job=name, image=image_path, artifact=Artifact.environment(str(environment.python)),
                           built=not environment.reused,
                           props={"env_key": environment.key, "env_python": str(environment.python),
                                  "image_digest": f"sha256:{environment.key}"})

    def _image(self, session: Session, job: CatalogObject, model: CatalogObject, version: str,
               spec: EnvironmentSpec, repo: CatalogObject, package: Path, force: bool) -> BuildResult:
        """For a Docker or Swarm pool: a layered OCI image, pushed to the repository's registry."""
        from duckserve.engine.images.builder import ImageBuilder, dependencies_key, image_name, image_tag
        from duckserve.engine.images.registry import open_registry, repository_path

        name = image_name(model.name)
        repository = f"{repository_path(repo.database, repo.schema, repo.name)}/{name}"
        tag = image_tag(version, dependencies_key(spec))
        labels = {"io.duckserve.model": model.key, "io.duckserve.version": version}
        try:
            with open(job.props["log_path"], "a", encoding="utf-8") as log:
                registry, _ = open_registry(self.account.home)
                built = ImageBuilder().build(spec, package, registry, repository, tag, labels, log, force=force)
        except (BuildError, OperationalError) as exc:
            self._fail(job, str(exc), exc)
        image_path = f"{registry.host}/{repository}:{tag}"
        reference = f"{registry.host}/{repository}@{built.digest}"
        image_key = f"{repo.name}/{name}:{tag}"
        record = self.account.catalog.get(A.IMAGE, image_key, repo.database, repo.schema)
        props = {"repository": repo.name, "image_name": name, "tag": tag, "digest": built.digest,
                 "image_path": image_path, "reference": reference, "size": built.size, "runtime": "docker"}
        if record is None:
            self.account.catalog.insert(CatalogObject(A.IMAGE, image_key, owner=session.role, database=repo.database,
                                                      schema=repo.schema, props=props))
        else:
            record.props.update(props)
            self.account.catalog.update(record)
        job.props.update(status="DONE", finished_on=now().isoformat(), image=image_path, reused=built.reused,
                         seconds=round(built.seconds, 3), runtime="docker", pushed=built.pushed,
                         warnings=spec.warnings())
        self.account.catalog.update(job)
        self._keep_log(job)
        return BuildResult(job=job.name, image=image_path, artifact=Artifact.image(reference, built.digest),
                           built=not built.reused,
                           props={"image_reference": reference, "image_digest": built.digest,
                                  "image_size": built.size, "pushed_layers": built.pushed})

    def _keep_log(self, job: CatalogObject) -> None:
        """Copy the finished job's log into the event table, where it outlives the job."""
        from duckserve.engine.services.monitoring import ingest_job_log

        try:
            ingest_job_log(self.account.home, job)
        except Error as exc:
            logger.warning("could not keep the log of job %s in the event table: %s", job.name, exc)

    def _fail(self, job: CatalogObject, problem: str, cause: BaseException | None = None) -> NoReturn:
        """Record the job as FAILED with ``problem`` (also in its log, unless the builder wrote it) and raise."""
        if cause is None:
            with open(job.props["log_path"], "a", encoding="utf-8") as log:
                log.write(f"{now().isoformat()} === duckserve model-build FAILED: {problem}\n")
        job.props.update(status="FAILED", finished_on=now().isoformat(), error=problem)
        self.account.catalog.update(job)
        self._keep_log(job)
        message = f"{problem} (job {job.name}: CALL SYSTEM$GET_SERVICE_LOGS('{job.name}', 0, '{LOG_CONTAINER}'))"
        raise BuildError(message) from cause
