"""Sending a build's layers out as soon as each is written: to the registry and to the local engine.

A ``Publisher`` takes the layers of an image in order (``add``), while the build writes the next
ones: one thread pushes each to the registry, another streams it into a ``docker load`` of the
image (``preload``), which gets the config and the manifest last (``finish``; Docker reads the
whole archive before it looks at its manifest). The base image's layers go out while the packages
are installed and compiled; the last layer's push and load are all that is left once it is written.
A failed push fails the build (``finish`` raises it); a failed load only means instances pull.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import IO

from duckserve.engine.images import preload
from duckserve.engine.images.layers import Layer
from duckserve.engine.images.registry import RegistryClient
from duckserve.engine.runtimes.docker_engine import Engine


class _Aborted(Exception):
    pass


class Publisher:
    def __init__(self, registry: RegistryClient, repository: str, engine: Engine | None, candidates: list[str],
                 log: IO[str], mount_from: str | None = None) -> None:
        self.registry, self.repository, self.engine, self.log, self.mount_from = (
            registry, repository, engine, log, mount_from)
        self.pushed: list[str] = []
        self._layers: list[Layer] = []
        self._final: tuple[bytes, str, str] | None = None
        self._aborted = False
        self._changed = threading.Condition()
        self._log_lock = threading.Lock()
        self._uploads: queue.Queue[Layer | None] = queue.Queue()
        self._push_error: BaseException | None = None
        self._pusher = threading.Thread(target=self._push_all, name="duckserve-push", daemon=True)
        self._pusher.start()
        self._loader: threading.Thread | None = None
        if engine is not None:
            self._loader = threading.Thread(target=self._load, args=(candidates,), name="duckserve-load", daemon=True)
            self._loader.start()

    def _say(self, line: str) -> None:
        with self._log_lock:
            self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
            self.log.flush()

    # -- the build's side -------------------------------------------------------------------------
    def add(self, layer: Layer) -> None:
        with self._changed:
            self._layers.append(layer)
            self._changed.notify_all()
        self._uploads.put(layer)

    def finish(self, config: bytes, config_digest: str, tag: str) -> list[str]:
        """Wait for every push (raising the first failure) and for the load; the layers pushed."""
        with self._changed:
            self._final = (config, config_digest, tag)
            self._changed.notify_all()
        self._uploads.put(None)
        self._pusher.join()
        if self._loader is not None:
            self._loader.join()
        if self._push_error is not None:
            raise self._push_error
        return self.pushed

    def abort(self) -> None:
        """The build failed: stop sending (a partial load is dropped by the engine)."""
        with self._changed:
            self._aborted = True
            self._changed.notify_all()
        self._uploads.put(None)
        self._pusher.join()
        if self._loader is not None:
            self._loader.join()

    # -- the registry -----------------------------------------------------------------------------
    def _push_all(self) -> None:
        while (layer := self._uploads.get()) is not None:
            if self._push_error is not None or self._aborted:
                continue
            started = time.monotonic()
            try:
                sent = self.registry.push_blob(self.repository, layer.digest, layer.path, mount_from=self.mount_from)
            except BaseException as exc:  # re-raised by finish, in the build's thread
                self._push_error = exc
                continue
            what = layer.description or "base"
            if sent:
                self.pushed.append(f"{what} ({layer.size / 2**20:.1f} MiB)")
            self._say(f"{'pushed' if sent else 'in the registry already:'} {what} ({layer.size / 2**20:.1f} MiB): "
                      f"{time.monotonic() - started:.1f}s")

    # -- the local engine -------------------------------------------------------------------------
    def _load(self, candidates: list[str]) -> None:
        assert self.engine is not None
        started = time.monotonic()
        sent = [0]
        try:
            chains = [((self.engine.image(c) or {}).get("RootFS") or {}).get("Layers") or [] for c in candidates]
            self.engine.load(self._archive(chains, sent))
            with self._changed:
                total = len(self._layers)
            self._say(f"loaded into the local Docker engine ({sent[0]} new layer(s) of {total}), while pushing: "
                      f"{time.monotonic() - started:.1f}s")
        except Exception as exc:  # a load that fails leaves nothing in the engine
            if not self._aborted and not isinstance(exc, _Aborted):
                self._say(f"could not load the image into the local Docker engine ({exc}): instances will pull it")

    def _archive(self, chains: list[list[str]], sent: list[int]) -> Iterator[bytes]:
        """The ``docker save`` archive: each layer the engine lacks as it comes, the config and
        manifest at the end."""
        at, written = 0, set()
        while True:
            with self._changed:
                while at >= len(self._layers) and self._final is None and not self._aborted:
                    self._changed.wait()
                if self._aborted:
                    raise _Aborted()
                if at >= len(self._layers):
                    break
                diff_ids = [layer.digest for layer in self._layers[:at + 1]]
                layer = self._layers[at]
            at += 1
            if layer.digest in written or any(chain[:len(diff_ids)] == diff_ids for chain in chains):
                continue  # the engine has it: a load skips the file of a layer whose chain it has
            written.add(layer.digest)
            sent[0] += 1
            yield from preload.layer_entry(layer)
        assert self._final is not None
        config, config_digest, tag = self._final
        yield from preload.config_entries(config, config_digest, self._layers, tag)

