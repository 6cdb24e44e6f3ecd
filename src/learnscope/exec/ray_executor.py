"""Ray: the same trial groups spread over a cluster (``pip install 'learnscope[ray]'``).

``address=None`` joins a Ray instance already running on this machine, or starts a local one;
``address="HOST:PORT"`` (or ``ray://HOST:PORT``) joins an existing cluster. Results come back to
the driver, which alone writes the store.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from learnscope.config import config_to_dict
from learnscope.errors import LearnscopeError
from learnscope.studies.base import Study, TrialOutput


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    url = urlparse(address if "://" in address else f"tcp://{address}")
    if not url.hostname or not url.port:
        raise LearnscopeError(f"--address {address!r} is not HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((url.hostname, url.port), timeout=timeout):
            pass
    except OSError as exc:
        raise LearnscopeError(f"cannot reach a Ray cluster at {address}: "
                              f"{exc.strerror or exc}") from None


def _remote_group(study_name: str, config: dict[str, Any], specs: list[dict[str, Any]]
                  ) -> tuple[list[TrialOutput], float]:
    from learnscope.exec.worker import init_worker, run_group

    init_worker()
    return run_group(study_name, config, specs)


class RayExecutor:
    """Runs trial groups as Ray tasks (one CPU each)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise LearnscopeError("the ray executor needs Ray: pip install 'learnscope[ray]'"
                                  ) from None
        if address:
            _check_reachable(address)
        if workers is not None and workers < 1:
            raise LearnscopeError(f"--workers must be at least 1, got {workers}")
        self.address = address
        self.workers = workers
        self.started_local = False

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                                  "log_to_driver": False, "configure_logging": False}
        if self.address:
            ray.init(address=self.address, **kwargs)
            return
        try:
            ray.init(address="auto", **kwargs)  # a Ray already running on this machine
        except (ConnectionError, RuntimeError, ValueError):
            from learnscope.exec.process import available_cores

            ray.init(num_cpus=self.workers or available_cores(), **kwargs)
            self.started_local = True

    def map(self, study: Study, cfg: Any, groups: list[list[dict[str, Any]]]
            ) -> Iterator[tuple[int, list[TrialOutput], float]]:
        if not groups:
            return
        import ray

        self._init()
        remote = ray.remote(num_cpus=1, max_retries=0)(_remote_group)
        config = config_to_dict(cfg)
        refs = {remote.remote(study.name, config, specs): i for i, specs in enumerate(groups)}
        finished: set[Any] = set()
        try:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    outputs, wall = ray.get(ref)
                    finished.add(ref)
                    yield refs[ref], outputs, wall
        finally:
            for ref in refs:  # interrupted: stop what is still queued or running
                if ref not in finished:
                    try:
                        ray.cancel(ref, force=True)
                    except Exception:  # noqa: BLE001 - already finished or gone
                        pass

    def close(self) -> None:
        import ray

        if self.started_local and ray.is_initialized():
            ray.shutdown()
