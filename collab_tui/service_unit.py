"""The systemd unit that runs `collab daemon` at boot (`collab service install`): its text, name and place.

Pure and light (standard library only): the CLI renders and writes the unit; the tests check its text.

Overrides (for tests, or an unusual layout): ``COLLAB_SYSTEMD_DIR`` is the directory units are written to
(instead of ``/etc/systemd/system`` or ``~/.config/systemd/user``); ``COLLAB_SYSTEMD_RUNTIME`` is the
directory whose presence means "systemd is running here" (instead of ``/run/systemd/system``).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import sys
from pathlib import Path

SYSTEM_DIR = Path("/etc/systemd/system")
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists exactly when the machine was booted with systemd
# The daemon's SIGTERM handler sends `el.leave` and, on the master, lets the others elect at once; it
# winds down in a few seconds. 30 s leaves room for a slow network before systemd sends SIGKILL.
STOP_TIMEOUT_S = 30
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def unit_name(name: str | None = None) -> str:
    """``collab.service``, or ``collab-NAME.service`` so several nodes (homes) can share one machine."""
    if not name:
        return "collab.service"
    if not NAME_RE.fullmatch(name) or len(name) > 200:
        raise ValueError(f"invalid service name {name!r}: use letters, digits, '.', '_' and '-'")
    return f"collab-{name}.service"


def unit_dir(user: bool) -> Path:
    """Where the unit goes: ``$COLLAB_SYSTEMD_DIR``, else the user manager's or the system's directory."""
    env = os.environ.get("COLLAB_SYSTEMD_DIR")
    if env:
        return Path(env).expanduser()
    if user:
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(xdg) / "systemd" / "user"
    return SYSTEM_DIR


def unit_path(user: bool, name: str | None = None) -> Path:
    return unit_dir(user) / unit_name(name)


def systemd_running() -> bool:
    """systemctl is installed and the machine runs systemd (not a container or a chroot without it)."""
    runtime = Path(os.environ.get("COLLAB_SYSTEMD_RUNTIME") or SYSTEMD_RUNTIME)
    return shutil.which("systemctl") is not None and runtime.is_dir()


def systemctl_argv(user: bool, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if user else []), *args]


def invoking_user() -> str:
    """The user who asked: under sudo the one who ran sudo, not root."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def collab_argv() -> list[str]:
    """How to run this collab again: the absolute path of the running `collab` script, else
    ``python -m collab_tui`` with this interpreter (a venv's python keeps its venv: no symlink resolution)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and Path(argv0).name == "collab":
        exe = argv0 if os.sep in argv0 else (shutil.which(argv0) or "")
        if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
            return [os.path.abspath(exe)]
    return [os.path.abspath(sys.executable), "-m", "collab_tui"]


def exec_argv(home: Path, argv: list[str] | None = None) -> list[str]:
    return [*(argv or collab_argv()), "daemon", "--home", str(Path(home).absolute())]


def _escape(value: str) -> str:
    """A value with systemd specifiers ('%') kept literal."""
    return value.replace("%", "%%")


def quote_arg(arg: str) -> str:
    """One ExecStart= word: bare when plain, else double-quoted with C-style escapes; '$' and '%' doubled
    so systemd expands neither variables nor specifiers in it."""
    arg = _escape(arg).replace("$", "$$")
    if arg and re.fullmatch(r"[A-Za-z0-9_@%+=:,./$-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(
    home: Path,
    *,
    user_mode: bool,
    user_name: str | None = None,
    argv: list[str] | None = None,
    description: str | None = None,
) -> str:
    """The unit text. System units run as ``user_name`` after the network is up; user units (``--user``)
    run in the user's manager and are wanted by ``default.target``."""
    home = Path(home).absolute()
    cmd = exec_argv(home, argv)
    env_home = _escape(f"COLLAB_HOME={home}").replace("\\", "\\\\").replace('"', '\\"')
    lines = [
        "# Written by `collab service install`; remove with `collab service uninstall`.",
        "[Unit]",
        f"Description={_escape(description or f'collab node ({home})')}",
    ]
    if not user_mode:  # the user manager cannot order itself after the system's network-online.target
        lines += ["After=network-online.target", "Wants=network-online.target"]
    lines += ["", "[Service]", "Type=simple"]
    if not user_mode:
        lines.append(f"User={user_name or invoking_user()}")
    lines += [
        f'Environment="{env_home}"',
        "Environment=PYTHONUNBUFFERED=1",
        "ExecStart=" + " ".join(quote_arg(a) for a in cmd),
        "Restart=on-failure",
        "RestartSec=2",
        "# SIGTERM = graceful leave (el.leave; an immediate election when this node is master). KillMode=mixed:",
        "# only the daemon gets SIGTERM, so it winds down its ML worker itself; leftovers get SIGKILL.",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        f"TimeoutStopSec={STOP_TIMEOUT_S}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_mode else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


def unit_home(text: str) -> str | None:
    """The node home a unit file was written for (its COLLAB_HOME), or None."""
    m = re.search(r'^Environment="?COLLAB_HOME=(.*?)"?$', text, re.MULTILINE)
    return m.group(1).replace("%%", "%").replace('\\"', '"').replace("\\\\", "\\") if m else None
