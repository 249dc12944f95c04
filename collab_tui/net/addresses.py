"""Which addresses a node advertises, and which address it records for a peer.

The rule (documented in the README):

* ``advertise`` is set: exactly that host.
* the node listens on one address (``--host 10.0.0.5``, ``--host 127.0.0.1``): that address.
* the node listens on every address (``0.0.0.0``, the default): every IPv4 address of the machine's
  interfaces except loopback and link-local (169.254/16), in interface order; 127.0.0.1 only when
  the machine has no other address. The mDNS record carries all of them.

On each connection a node states the address the other side reached it on (the local end of that
socket), so on a machine with several interfaces every peer is told the address that works for it.
What a node records for a peer is the address the peer stated, unless the peer claims loopback while
the connection came from elsewhere: then the observed source address (with the stated port) wins.
"""

from __future__ import annotations

import ipaddress

WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def is_wildcard(host: str) -> bool:
    return host in WILDCARDS


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def interface_ipv4s() -> list[str]:
    """IPv4 addresses of this machine's interfaces, without loopback and link-local ones."""
    import ifaddr  # a dependency of zeroconf

    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 entries are tuples
            addr = ipaddress.ip_address(ip.ip)
            if addr.is_loopback or addr.is_link_local or addr.is_unspecified or str(addr) in out:
                continue
            out.append(str(addr))
    return out


def advertised_hosts(host: str, advertise: str = "", interfaces: list[str] | None = None) -> list[str]:
    """The hosts this node tells others to dial (see the module docstring). ``interfaces`` stands in
    for :func:`interface_ipv4s` (tests)."""
    if advertise:
        return [advertise]
    if not is_wildcard(host):
        return [host]
    found = interface_ipv4s() if interfaces is None else list(interfaces)
    return found or ["127.0.0.1"]


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def peer_address(stated: str, observed_host: str | None) -> str:
    """The address to record for a peer: what it stated in its HELLO, unless that is empty, a wildcard
    or loopback while the connection came from another host (a misconfigured or old peer)."""
    parts = split_hostport(stated)
    if parts is None:
        return stated
    host, port = parts
    if observed_host and (is_wildcard(host) or (is_loopback(host) and not is_loopback(observed_host))):
        return join_hostport(observed_host, port)
    return stated
