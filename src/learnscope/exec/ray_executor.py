"""Ray: the same trial groups spread over a cluster (``pip install 'learnscope[ray]'``).

``address=None`` joins a Ray instance already running on this machine, or starts a local one;
``address="HOST:PORT"`` (or ``ray://HOST:PORT``) joins an existing cluster. Results come back to
the driver, which alone writes the store. The executor connects when it is made, so a cluster
that cannot be joined is reported before anything is stored.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from learnscope.config import config_to_dict
from learnscope.errors import LearnscopeError
from learnscope.studies.base import Study, TrialOutput

# Ray's token authentication (on by default for clusters started with a token at hand): the
# token comes from RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token,
# but a driver given an explicit address only sends it when RAY_AUTH_MODE=token.
_AUTH_MODE = "RAY_AUTH_MODE"
_TOKEN_HINT = ("`ray get-auth-token` on the head node prints the token: set RAY_AUTH_TOKEN to "
               "it, or save it as ~/.ray/auth_token")
# The address already answered on TCP, so a GCS that refuses us will not change its mind:
# five connection attempts (about 5 s) instead of Ray's twenty.
_CONNECT_ATTEMPTS = "5"


@dataclass(frozen=True)
class RayAddress:
    """A validated ``--address``: ``HOST:PORT`` or ``ray://HOST:PORT`` (IPv6 in brackets)."""

    text: str
    host: str
    port: int
    client: bool  # ray:// (Ray Client) rather than the cluster's GCS port


def parse_address(address: str) -> RayAddress:
    """Check the shape and port range of ``address``; LearnscopeError (one line) if wrong."""
    shape = (f"--address {address!r} is not HOST:PORT or ray://HOST:PORT "
             "(an IPv6 host in brackets: [::1]:6379)")
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    elif scheme != "ray":
        raise LearnscopeError(f"{shape}; unknown scheme '{scheme}://'")
    try:
        url = urlsplit(f"tcp://{rest}")
        host = url.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise LearnscopeError(shape) from None
    try:
        port = url.port
    except ValueError:  # not a number, or above 65535
        raw = url.netloc.rpartition("]")[2].partition(":")[2]  # as urllib reads the port
        if raw.isdigit():
            raise LearnscopeError(f"--address {address!r}: port {int(raw)} is outside "
                                  "1-65535") from None
        raise LearnscopeError(shape) from None
    if not host or port is None or url.path or url.query or url.fragment or "@" in url.netloc:
        raise LearnscopeError(shape)
    if port == 0:
        raise LearnscopeError(f"--address {address!r}: port 0 is outside 1-65535")
    return RayAddress(text, host, port, client=bool(sep))


def _check_reachable(address: RayAddress, timeout: float = 5.0) -> None:
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            pass
    except OSError as exc:
        raise LearnscopeError(f"cannot reach a Ray cluster at {address.text}: "
                              f"{exc.strerror or exc}") from None


def _token_available() -> bool:
    """Whether a Ray authentication token is at hand, looked up as Ray looks it up."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return bool(Path(path).read_text().strip())
    except OSError:
        return False


def _send_token_if_available() -> None:
    """Authenticate to the cluster when a token is at hand (and the user set no auth mode).

    Sending a token to a cluster without authentication does no harm; not sending one to a
    cluster with it fails, so with a token present we always send it.
    """
    if _AUTH_MODE in os.environ or not _token_available():
        return
    os.environ[_AUTH_MODE] = "token"
    try:  # Ray reads its configuration once, when imported: read it again
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):  # pragma: no cover - other Ray versions
        pass


@contextlib.contextmanager
def _ray_output_into(log_path: Path) -> Iterator[None]:
    """Send what Ray prints while connecting (its C++ core writes to fd 2) into a log file."""
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
            yield
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        if buffer.getvalue():
            with open(log_path, "a") as log:
                log.write(buffer.getvalue())


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for a block unless the user already set it."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _remote_group(study_name: str, config: dict[str, Any], specs: list[dict[str, Any]]
                  ) -> tuple[list[TrialOutput], float]:
    from learnscope.exec.worker import init_worker, run_group

    init_worker()
    return run_group(study_name, config, specs)


class RayExecutor:
    """Runs trial groups as Ray tasks (one CPU each), at most ``workers`` at a time.

    ``workers`` defaults to every CPU of the cluster; more than it has is an error, as for the
    process executor.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        parsed = parse_address(address) if address is not None else None
        if workers is not None and workers < 1:
            raise LearnscopeError(f"--workers must be at least 1, got {workers}")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise LearnscopeError("the ray executor needs Ray: pip install 'learnscope[ray]'"
                                  ) from None
        if parsed is not None:
            _check_reachable(parsed)
        self.address = parsed.text if parsed is not None else None
        self.workers = workers
        self.started_local = False  # this executor started the Ray it uses
        self._connected = False  # this executor called ray.init (it disconnects when closed)
        self._connect()
        self._check_workers()

    def _connect(self) -> None:
        """Join the cluster (or a local Ray, or start one); Ray's own output goes to a log."""
        import ray

        if ray.is_initialized():
            return
        from learnscope.exec.process import available_cores

        cores = available_cores()
        if not self.address and self.workers is not None and self.workers > cores:
            raise LearnscopeError(f"--workers {self.workers} is more than this machine's "
                                  f"{cores} cores")
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                                  "log_to_driver": False, "configure_logging": False}
        fd, name = tempfile.mkstemp(prefix="learnscope-ray-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
        try:
            with _ray_output_into(log_path):
                if self.address:
                    _send_token_if_available()
                    with _env("RAY_gcs_server_port_wait_time_s", _CONNECT_ATTEMPTS):
                        ray.init(address=self.address, **kwargs)
                else:
                    try:
                        ray.init(address="auto", **kwargs)  # a Ray running on this machine
                    except (ConnectionError, RuntimeError, ValueError):
                        ray.init(num_cpus=self.workers or cores, **kwargs)
                        self.started_local = True
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; all mean "no cluster"
            if ray.is_initialized():
                ray.shutdown()
            self.started_local = False
            raise self._connect_error(exc, log_path) from None
        self._connected = True
        log_path.unlink(missing_ok=True)

    def _connect_error(self, exc: Exception, log_path: Path) -> LearnscopeError:
        """One line for a failed connection, naming the log that holds Ray's own lines."""
        said = f"{log_path.read_text(errors='replace')} {exc}"
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
        if any(w in said for w in ("InvalidAuthToken", "Unauthenticated",
                                   "authentication token")):
            return LearnscopeError(
                f"{where} refused the connection: its authentication token is missing or "
                f"wrong here ({_TOKEN_HINT}); Ray's log: {log_path}")
        return LearnscopeError(f"cannot connect to {where}: {_one_line(exc)}; "
                               f"Ray's log: {log_path}")

    def _check_workers(self) -> None:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.workers is not None and self.workers > cpus:
            where = f"the Ray cluster at {self.address}" if self.address else "the local Ray"
            self.close()  # disconnect, and stop the Ray this executor started, if it did
            raise LearnscopeError(f"--workers {self.workers} is more than the {cpus} CPUs of "
                                  f"{where}")

    def map(self, study: Study, cfg: Any, groups: list[list[dict[str, Any]]]
            ) -> Iterator[tuple[int, list[TrialOutput], float]]:
        if not groups:
            return
        import ray

        self._connect()
        remote = ray.remote(num_cpus=1, max_retries=0)(_remote_group)
        config = config_to_dict(cfg)
        waiting = list(enumerate(groups))
        waiting.reverse()
        limit = self.workers or len(groups)
        running: dict[Any, int] = {}
        try:
            while waiting or running:
                while waiting and len(running) < limit:
                    i, specs = waiting.pop()
                    running[remote.remote(study.name, config, specs)] = i
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i = running.pop(ref)
                    outputs, wall = ray.get(ref)
                    yield i, outputs, wall
        finally:
            for ref in running:  # interrupted: stop what is still running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass

    def close(self) -> None:
        """Disconnect (stopping a local Ray it started); a Ray the caller set up stays."""
        import ray

        if self._connected and ray.is_initialized():
            ray.shutdown()
        self._connected = self.started_local = False
