"""The composition root: the one place that builds a node, attaches its services (each with its own
`ServiceContext`, never the node) and mounts their control commands next to the node's own.

`collab daemon` (daemon.py, beside it) uses it, lazily, so the CLI stays light. A new
service is added to `service_factories` and nowhere else: a class taking a `ServiceContext`, with
``start()``, ``stop()`` and ``command_sets()`` (the control command classes it mounts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .config import NodeConfig
from .logs import RingHandler
from .net import identity as ident_mod
from .node.commands import NodeCommands
from .node.context import NodeContext, ServiceContext
from .node.control import ControlServer
from .node.runtime import Node


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def command_sets(self) -> list[object]: ...


def service_factories() -> list[Callable[[ServiceContext], Service]]:
    """Every service this installation provides (imported here, not at module level: they pull in numpy)."""
    from .jobs.service import JobService
    from .people.service import PeopleService
    from .training.service import TrainingService

    return [JobService, TrainingService, PeopleService]


@dataclass
class Composed:
    node: Node
    control: ControlServer
    services: list[Service] = field(default_factory=list)

    async def start(self) -> None:
        """The services' slow set-up (before anything answers: a node that says it runs has its addresses),
        the control socket (a client may ask for `status` while the node starts), then the node, which starts
        its services."""
        for svc in self.services:  # slow set-up that would stall the event loop once peers are connected
            if (prepare := getattr(svc, "prepare", None)) is not None:
                await asyncio.to_thread(prepare)
        await self.control.start()
        await self.node.start()


def compose(
    home: Path, cfg: NodeConfig, ident: ident_mod.NodeIdentity | None = None, ring: RingHandler | None = None
) -> Composed:
    """A node with every service attached and every control command set mounted (nothing started). ``ring``:
    the log ring the `logs` command reads (`setup_logging`'s; a private one if None)."""
    node = Node(home, cfg, ident)
    out = Composed(node, ControlServer(home))
    out.control.mount(NodeCommands(node, ring if ring is not None else RingHandler()))
    for make in service_factories():
        svc = make(NodeContext(node))
        node.attach(svc)
        out.services.append(svc)
        for commands in svc.command_sets():
            out.control.mount(commands)
    return out
