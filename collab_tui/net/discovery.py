"""Discovery: mDNS (AsyncZeroconf) plus static host:port peers. Discovery only proposes addresses;
TLS and the HELLO decide trust.

TXT record (small on purpose): ``id`` node id (64 hex), ``cl`` cluster id prefix (16 hex),
``v`` protocol version, ``port``, and ``ca=1`` on nodes that can sign joins (a hint for `collab join`,
which still checks the CA pin before it sends anything). The record carries every address the node
advertises (see `addresses.py`). Interfaces are configurable; tests and the demo on loopback pin them
to 127.0.0.1 so that nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from .. import PROTOCOL_VERSION
from ..config import SERVICE_TYPE

log = logging.getLogger("collab.discovery")

Propose = Callable[[str, int, str, dict], None]  # host, port, node_id ("" when unknown), TXT fields


def txt_record(node_id: str, cluster_id: str, port: int, can_sign: bool = False) -> dict[str, str]:
    txt = {"id": node_id, "cl": cluster_id[:16], "v": str(PROTOCOL_VERSION), "port": str(port)}
    if can_sign:
        txt["ca"] = "1"
    return txt


def parse_txt(props: dict) -> dict[str, str]:
    out = {}
    for k, v in (props or {}).items():
        key = k.decode() if isinstance(k, bytes) else str(k)
        val = v.decode(errors="replace") if isinstance(v, bytes) else ("" if v is None else str(v))
        out[key] = val
    return out


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return False
    return True


class MdnsDiscovery:
    """Advertise this node and browse for others of the same cluster."""

    def __init__(
        self,
        node_id: str,
        name: str,
        cluster_id: str,
        hosts: list[str],
        port: int,
        propose: Propose,
        interfaces: list[str] | None = None,
        can_sign: bool = False,
    ) -> None:
        self.node_id = node_id
        self.name = name
        self.cluster_id = cluster_id
        self.hosts = list(hosts)
        self.port = port
        self.can_sign = can_sign
        self.propose = propose
        self.interfaces = interfaces or []
        self._azc = None
        self._info = None
        self._browser = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def instance_name(self) -> str:
        label = "".join(c for c in (self.name or "node") if c.isalnum() or c in "-_")[:40] or "node"
        return f"{label}-{self.node_id[:8]}.{SERVICE_TYPE}"

    async def start(self, advertise: bool = True) -> None:
        from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        self._state_added = (ServiceStateChange.Added, ServiceStateChange.Updated)
        # interfaces: the configured addresses (tests and the demo pin 127.0.0.1), else all of them
        self._azc = AsyncZeroconf(ip_version=IPVersion.V4Only, interfaces=self.interfaces or InterfaceChoice.All)
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change])
        if not advertise:
            return
        self._info = self._service_info()
        # The instance name carries part of the node id, so it is unique: skip the ~1.2 s name probe.
        await self._azc.async_register_service(self._info, allow_name_change=True, cooperating_responders=True)
        log.info(
            "mDNS: advertising %s at %s on %s",
            self.instance_name,
            ", ".join(self.hosts),
            self.interfaces or "all interfaces",
        )

    def _service_info(self):
        from zeroconf.asyncio import AsyncServiceInfo

        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.instance_name,
            addresses=[socket.inet_aton(h) for h in self.hosts if _is_ipv4(h)],
            port=self.port,
            properties=txt_record(self.node_id, self.cluster_id, self.port, self.can_sign),
            server=f"collab-{self.node_id[:12]}.local.",
        )

    async def update_hosts(self, hosts: list[str]) -> None:
        """The machine's addresses changed (DHCP, a new interface): announce the new record."""
        self.hosts = list(hosts)
        if self._azc is None or self._info is None:
            return
        self._info = self._service_info()
        await self._azc.async_update_service(self._info)
        log.info("mDNS: now advertising %s", ", ".join(self.hosts))

    def _on_change(self, zeroconf, service_type: str, name: str, state_change) -> None:
        if state_change in self._state_added:
            task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        info = AsyncServiceInfo(service_type, name)
        try:
            ok = await info.async_request(self._azc.zeroconf, 1500)
        except Exception as exc:  # malformed records must not hurt the node
            log.debug("mDNS: cannot resolve %s: %s", name, exc)
            return
        if not ok:
            return
        txt = parse_txt(info.properties)
        if txt.get("id") == self.node_id or txt.get("cl") != self.cluster_id[:16]:
            return
        if txt.get("v") != str(PROTOCOL_VERSION):
            log.info("mDNS: %s speaks protocol %s, ignoring", name, txt.get("v"))
            return
        for addr in info.parsed_addresses():
            self.propose(addr, int(info.port), txt.get("id", ""), txt)

    async def stop(self) -> None:
        """Send goodbye packets (await the unregister task) and close."""
        if self._azc is None:
            return
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            if self._info is not None:
                task = await self._azc.async_unregister_service(self._info)
                await asyncio.wait_for(task, 3.0)
        except Exception as exc:
            log.debug("mDNS: unregister failed: %s", exc)
        finally:
            for t in list(self._tasks):
                t.cancel()
            await self._azc.async_close()
            self._azc = None


def browser(cluster_prefix: str, propose: Propose, interfaces: list[str] | None = None) -> MdnsDiscovery:
    """For `collab join`, before it has an identity: call ``await b.start(advertise=False)``; every
    address of every node advertising the cluster is then proposed as it resolves; ``await b.stop()``."""
    return MdnsDiscovery("0" * 64, "joiner", cluster_prefix, [], 9, propose, interfaces)
