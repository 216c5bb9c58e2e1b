"""Image repositories as the registry holds them: their URL, their images, their removal.

A repository ``db.schema.repo`` is the path ``db/schema/repo/`` of the home's registry; each model
is an image below it (``db/schema/repo/<model>``) whose tags say the version and the dependency set
(``v1-3f2a1b9c0d``). Images built for process pools (environments on this host) are catalog records
only; they are listed beside the registry's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from duckserve.engine.catalog import CatalogObject
from duckserve.engine.images.registry import existing_registry, registry_host, repository_path


def repository_url(home: Path, repo: CatalogObject) -> str:
    """What ``docker pull`` accepts before ``/<image>:<tag>``."""
    return f"{registry_host(home)}/{repository_path(repo.database, repo.schema, repo.name)}"


def registry_images(home: Path, repo: CatalogObject) -> list[dict[str, Any]]:
    """Every tagged image of the repository in the registry: name, tag, digest, size (of its layers)."""
    opened = existing_registry(home)
    if opened is None:
        return []
    client, _ = opened
    prefix = repository_path(repo.database, repo.schema, repo.name) + "/"
    found = []
    for repository in client.repositories(prefix):
        for tag in client.tags(repository):
            manifest = client.manifest(repository, tag)
            if manifest is None:
                continue
            digest, body = manifest
            found.append({"image_name": repository[len(prefix):], "tags": tag, "digest": digest,
                          "size": sum(int(layer.get("size", 0)) for layer in body.get("layers", [])),
                          "image_path": f"{client.host}/{repository}:{tag}"})
    return found


def remove_images(home: Path, repo: CatalogObject) -> int:
    """Delete every image of the repository from the registry (a local registry also frees their
    layers); how many images were removed."""
    opened = existing_registry(home)
    if opened is None:
        return 0
    client, local = opened
    prefix = repository_path(repo.database, repo.schema, repo.name) + "/"
    removed = 0
    repositories = client.repositories(prefix)
    for repository in repositories:
        digests = set()
        for tag in client.tags(repository):
            manifest = client.manifest(repository, tag)
            if manifest is not None:
                digests.add(manifest[0])
        for digest in sorted(digests):
            client.delete_manifest(repository, digest)
            removed += 1
    if local is not None and repositories:
        for repository in repositories:
            shutil.rmtree(local.data / "docker" / "registry" / "v2" / "repositories" / repository, ignore_errors=True)
        local.collect_garbage()
    return removed
