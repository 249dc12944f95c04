"""Node configuration: a TOML file in the node's home, overridden by COLLAB_* environment variables.

Home resolution: ``--home DIR`` > ``$COLLAB_HOME`` > ``$XDG_DATA_HOME/collab`` (``~/.local/share/collab``).
Everything a node owns lives under its home, so several nodes can share one machine::

    HOME/config.toml        settings (optional)
    HOME/identity/          keys and certificates (private keys 0600)
    HOME/state/             persisted term, deny-list, tokens, jobs, models
    HOME/run/               control socket (0600) and node.json (pid, ports) while a daemon runs
    HOME/logs/collab.log    rotating log
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_PORT = 7373
SERVICE_TYPE = "_collab._tcp.local."


def default_home() -> Path:
    env = os.environ.get("COLLAB_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "collab"


def resolve_home(home: str | os.PathLike | None) -> Path:
    return Path(home).expanduser().resolve() if home else default_home().resolve()


class ConfigError(ValueError):
    """A config file or an environment override that cannot be used."""


@dataclass
class NodeConfig:
    name: str = ""
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # the address peers should dial; default: `host`, or when `host` is 0.0.0.0 every non-loopback IPv4
    # address of the machine (see net/addresses.py)
    advertise: str = ""
    priority: int = 0
    peers: list[str] = field(default_factory=list)  # static "host:port" peers
    mdns: bool = True
    mdns_interfaces: list[str] = field(default_factory=list)  # [] = all interfaces
    heartbeat_interval: float = 0.25
    suspect_after: int = 3
    dead_after: int = 6
    preempt: bool = True
    quorum: int = 0  # 0 = majority of known members
    handshake_timeout: float = 3.0
    request_timeout: float = 10.0
    max_frame: int = 4 * 1024 * 1024
    # per-connection bounds on what a peer may make this node hold (see net/transport.py): a partial frame
    # must be complete within frame_timeout s of its first byte; at most max_open_blobs unfinished blobs,
    # announcing at most max_blob bytes together; each done within max(blob_timeout, size / blob_min_rate) s
    frame_timeout: float = 10.0
    max_blob: int = 512 * 1024 * 1024
    max_open_blobs: int = 8
    blob_timeout: float = 30.0
    blob_min_rate: float = 1024.0 * 1024.0  # bytes/s
    log_level: str = "INFO"
    # threads running distributed-job tasks on this node: 0 = one per CPU; -1 = none (the node still submits
    # jobs and, as master, schedules them, but is never given a task)
    job_threads: int = 0
    # lifetime of the node certificates this node signs when it is the root or an admin (joins, renewals);
    # every node renews its own while a third of it is left
    cert_days: float = 30.0
    # TensorFlow threads of this node's ML process (each of its intra-op and inter-op pools): 0 = TensorFlow's
    # default, every core. Nodes that share one machine (`collab demo`, the local cluster) split its cores:
    # several processes each with a thread per core on the same cores run slower than one thread each
    ml_threads: int = 0

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _coerce(name: str, current, raw: str | object):
    if not isinstance(raw, str):
        value = raw
    elif isinstance(current, bool):
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"{name}: expected a boolean, got {raw!r}")
        value = raw.lower() in ("1", "true", "yes", "on")
    elif isinstance(current, int):
        value = raw
    elif isinstance(current, float):
        value = raw
    elif isinstance(current, list):
        value = [p.strip() for p in raw.split(",") if p.strip()]
    else:
        value = raw
    try:
        if isinstance(current, bool):
            return bool(value)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, list):
            return [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot use {raw!r} ({exc})") from None


def load_config(home: Path, overrides: dict | None = None, env: dict | None = None) -> NodeConfig:
    """File, then ``COLLAB_<FIELD>`` environment variables, then explicit (CLI) overrides."""
    cfg = NodeConfig()
    known = {f.name for f in fields(NodeConfig)}
    path = home / "config.toml"
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for key, value in data.get("node", data).items():
            if key not in known:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            setattr(cfg, key, _coerce(key, getattr(cfg, key), value))
    env = os.environ if env is None else env
    for key in known:
        raw = env.get(f"COLLAB_{key.upper()}")
        if raw is not None:
            setattr(cfg, key, _coerce(key, getattr(cfg, key), raw))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        setattr(cfg, key, _coerce(key, getattr(cfg, key), value))
    if not (0 <= cfg.port < 65536):
        raise ConfigError(f"port out of range: {cfg.port}")
    if cfg.heartbeat_interval <= 0 or cfg.suspect_after < 1 or cfg.dead_after <= cfg.suspect_after:
        raise ConfigError("need heartbeat_interval > 0 and dead_after > suspect_after >= 1")
    if not 0 < cfg.cert_days <= 3650:
        raise ConfigError(f"cert_days: expected a lifetime in days within (0, 3650], got {cfg.cert_days}")
    if cfg.ml_threads < 0:
        raise ConfigError(f"ml_threads: expected 0 (every core) or a count, got {cfg.ml_threads}")
    if cfg.job_threads < -1:
        raise ConfigError(f"job_threads: expected -1 (none), 0 (one per CPU) or a count, got {cfg.job_threads}")
    return cfg


def write_config(home: Path, values: dict) -> Path:
    """Write a small config.toml (strings, numbers, booleans, lists of strings)."""

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    lines = ["[node]"] + [f"{k} = {fmt(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ConfigError(f"expected host:port, got {text!r}")
    return host.strip("[]"), int(port)
