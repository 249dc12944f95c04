"""The one client of the control API: a method per command (`Commands`), on two transports.

`Client` is synchronous (the CLI: plain sockets, no asyncio, fast start); `AsyncClient` is for the TUI's
event loop. Both share every method: a method builds the command's request (`api.py`) and hands it to
the transport's ``_call`` (``_stream`` for streaming commands), which returns the reply (sync) or an
awaitable of it (async). Neither frontend names a command as a string. ``using(timeout=...)`` gives a
client whose calls wait that long.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from . import api
from .node.control import AsyncControlClient, ControlClient, ControlError, NoNodeRunning

ENROL_TIMEOUT = 600.0  # seconds `people_add` waits: a folder of big photos takes a while to embed

__all__ = ["AsyncClient", "Client", "Commands", "ControlError", "NoNodeRunning"]


class Commands:
    """Every control command, once. Subclasses provide ``_call(request)`` and ``_stream(request)``."""

    timeout: float = 30.0

    def _call(self, request: api.Request) -> Any:  # pragma: no cover - provided by the transports
        raise NotImplementedError

    def _stream(self, request: api.Stream) -> Any:  # pragma: no cover
        raise NotImplementedError

    def using(self, timeout: float) -> Commands:
        """The same client, waiting ``timeout`` seconds for each answer."""
        other = copy.copy(self)
        other.timeout = timeout
        return other

    # ------------------------------------------------------------- node
    def status(self) -> api.StatusReply:
        return self._call(api.Status())

    def nodes(self) -> list[api.NodeRow]:
        return self._call(api.Nodes())

    def invite(self, ttl: float = 3600.0, uses: int = 1) -> api.InviteReply:
        return self._call(api.Invite(ttl=ttl, uses=uses))

    def trust_list(self) -> api.TrustListReply:
        return self._call(api.TrustList())

    def revoke(self, node: str, reason: str = "") -> api.RevokeReply:
        return self._call(api.Revoke(node=node, reason=reason))

    def set_priority(self, node: str, priority: int) -> api.SetPriorityReply:
        return self._call(api.SetPriority(node=node, priority=priority))

    def invite_list(self) -> list[dict]:
        return self._call(api.InviteList())

    def invite_revoke(self, token_id: str) -> dict:
        return self._call(api.InviteRevoke(token_id=token_id))

    def trust_log(self) -> list[dict]:
        return self._call(api.TrustLogGet())

    def trust_status(self) -> dict:
        return self._call(api.TrustStatus())

    def admin_add(self, node: str) -> dict:
        return self._call(api.AdminAdd(node=node))

    def admin_remove(self, node: str) -> dict:
        return self._call(api.AdminRemove(node=node))

    def logs(
        self, n: int = 100, cluster: bool = False, node: str | None = None, level: str | None = None
    ) -> list[api.LogRecord]:
        return self._call(api.Logs(n=n, cluster=cluster, node=node, level=level))

    def stop(self) -> dict:
        return self._call(api.Stop())

    def subscribe(self, kinds: list[str] | None = None):
        return self._stream(api.Subscribe(kinds=kinds))

    def logs_follow(self, n: int = 20, cluster: bool = False, node: str | None = None, level: str | None = None):
        return self._stream(api.LogsFollow(n=n, cluster=cluster, node=node, level=level))

    # ------------------------------------------------------------- jobs
    def submit(
        self,
        paths: list[str],
        task: str = "faces",
        options: dict | None = None,
        model: str | None = None,
        out: str | None = None,
    ) -> api.SubmitReply:
        return self._call(api.Submit(paths=list(paths), task=task, options=dict(options or {}), model=model, out=out))

    def jobs(self) -> list[api.JobRow]:
        return self._call(api.Jobs())

    def job_show(self, job_id: str) -> api.JobDetail:
        return self._call(api.JobShow(job_id=job_id))

    def job_types(self) -> list[api.JobTypeInfo]:
        return self._call(api.JobTypes())

    def job_cancel(self, job_id: str) -> dict:
        return self._call(api.JobCancel(job_id=job_id))

    def job_watch(self, job_id: str):
        return self._stream(api.JobWatch(job_id=job_id))

    # ------------------------------------------------------------- training, models, data
    def train(self, **config: Any) -> api.StartedRun:
        """Start a run; ``config`` holds `api.Train`'s fields (unset ones take the defaults)."""
        try:
            request = api.decode(api.Train, config)
        except ValueError as exc:
            raise ControlError(str(exc)) from None
        return self._call(request)

    def runs(self) -> list[api.RunRow]:
        return self._call(api.Runs())

    def run_show(self, run_id: str, full: bool = False) -> api.RunDetail:
        return self._call(api.RunShow(run_id=run_id, full=full))

    def run_stop(self, run_id: str) -> dict:
        return self._call(api.RunStop(run_id=run_id))

    def train_resume(self, run_id: str | None = None) -> dict:
        return self._call(api.TrainResume(run_id=run_id))

    def run_watch(self, run_id: str):
        return self._stream(api.RunWatch(run_id=run_id))

    def models_list(self) -> list[dict]:
        return self._call(api.ModelsList())

    def models_show(self, ref: str) -> dict:
        return self._call(api.ModelsShow(ref=ref))

    def models_import(self, path: str, name: str) -> dict:
        return self._call(api.ModelsImport(path=path, name=name))

    def models_export(self, ref: str, path: str) -> dict:
        return self._call(api.ModelsExport(ref=ref, path=path))

    def people_add(self, name: str, paths: list[str], detector: str | None = None) -> dict:
        """Enrolment embeds every photo on the node first: a folder of big photos takes a while."""
        request = api.PeopleAdd(name=name, paths=list(paths), detector=detector)
        return self.using(max(self.timeout, ENROL_TIMEOUT))._call(request)

    def people_list(self) -> dict:
        return self._call(api.PeopleList())

    def people_show(self, name: str) -> dict:
        return self._call(api.PeopleShow(name=name))

    def people_remove(self, name: str) -> dict:
        return self._call(api.PeopleRemove(name=name))

    def data_add(self, name: str, spec: dict) -> dict:
        return self._call(api.DataAdd(name=name, spec=dict(spec)))

    def data_list(self) -> list[dict]:
        return self._call(api.DataList())

    def data_stats(self, name: str) -> dict:
        return self._call(api.DataStats(name=name))

    def data_split(self, name: str, as_: str | None = None, scheme: str = "iid", seed: int = 0) -> dict:
        return self._call(api.DataSplit(name=name, as_=as_, scheme=scheme, seed=seed))

    # ------------------------------------------------------------- doctor
    def doctor(self, ml: bool = True, ml_timeout: float = 60.0) -> api.DoctorReply:
        return self._call(api.Doctor(ml=ml, ml_timeout=ml_timeout))


class Client(Commands):
    """Synchronous client (the CLI). Connects at once: raises `NoNodeRunning` when no node runs."""

    def __init__(self, home: Path, timeout: float = 30.0) -> None:
        self.home = home
        self.timeout = timeout
        self._conn = ControlClient(home, timeout=timeout)

    def _call(self, request: api.Request) -> Any:
        self._conn.sock.settimeout(self.timeout)
        return self._conn.call(request.NAME, **api.encode(request))

    def _stream(self, request: api.Stream) -> Iterator[dict]:
        return self._conn.stream(request.NAME, **api.encode(request))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(Commands):
    """asyncio client (the TUI): one connection per call, so no I/O happens until the first call."""

    def __init__(self, home: Path, timeout: float = 30.0) -> None:
        self.home = home
        self.timeout = timeout
        self._transport = AsyncControlClient(home)

    def _call(self, request: api.Request) -> Any:  # an awaitable of the reply
        return self._transport.call(request.NAME, timeout=self.timeout, **api.encode(request))

    def _stream(self, request: api.Stream) -> AsyncIterator[dict]:
        return self._transport.stream(request.NAME, **api.encode(request))
