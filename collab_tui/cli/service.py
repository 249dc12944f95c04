"""`collab service install|uninstall|status`: run `collab daemon` at boot under systemd."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from .. import service_unit as su
from .common import HomeOpt, JsonOpt, home_of, state
from .output import EXIT_ERROR, Out

service_app = typer.Typer(help="Run this node at boot (a systemd unit for `collab daemon`).", no_args_is_help=True)

UserOpt = Annotated[
    bool, typer.Option("--user", help="A unit of your user manager (~/.config/systemd/user), no root needed.")
]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="Unit collab-NAME.service (several nodes, one home each, on one machine).")
]


def _unit_name(name: str | None) -> str:
    try:
        return su.unit_name(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--name") from None


def _cmdline(argv: list[str]) -> str:
    return " ".join(argv)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 1, "", str(exc))


def _service_home(home: Path | None, user_mode: bool, user_name: str) -> tuple[Path, str | None]:
    """The node home for the unit, and a note when it was chosen for another user than the one running.

    Same resolution as every command (--home, $COLLAB_HOME, the default); but `sudo collab service install`
    with neither means the default home of the user who ran sudo (the unit's User=), not root's."""
    import pwd

    from ..config import resolve_home

    if home or user_mode or os.environ.get("COLLAB_HOME"):
        return home_of(home), None
    explicit_root = getattr(state, "home", None) and state.home != resolve_home(None)
    if explicit_root:  # `collab --home DIR service install`
        return state.home, None
    try:
        me = pwd.getpwuid(os.getuid()).pw_name
        if user_name == me:
            return home_of(None), None
        pw_dir = Path(pwd.getpwnam(user_name).pw_dir)
    except KeyError:
        return home_of(None), None
    return (pw_dir / ".local" / "share" / "collab").resolve(), f"home of {user_name} (pass --home to choose another)"


def _warn(out: Out, warnings: list[str]) -> None:
    for line in warnings:
        out.info(line)


@service_app.command("install")
def install(
    user: UserOpt = False,
    home: HomeOpt = None,
    name: NameOpt = None,
    user_name: Annotated[
        str | None, typer.Option("--user-name", help="User= of a system unit (default: you, or $SUDO_USER).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the unit and its path; write nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a systemd unit for `collab daemon` (restart on failure, SIGTERM = graceful leave), then
    `systemctl daemon-reload` and `enable --now` it when systemd runs here (else print those commands)."""
    out = Out(json_out)
    unit = _unit_name(name)
    who = None if user else (user_name or su.invoking_user())
    h, note = _service_home(home, user, who or "")
    path = su.unit_path(user, name)
    text = su.render_unit(h, user_mode=user, user_name=who)
    commands = [su.systemctl_argv(user, "daemon-reload"), su.systemctl_argv(user, "enable", "--now", unit)]
    res = {
        "path": str(path),
        "unit": unit,
        "user_mode": user,
        "user_name": who,
        "home": str(h),
        "exec_start": su.exec_argv(h),
        "dry_run": dry_run,
        "written": False,
        "changed": False,
        "systemd": su.systemd_running(),
        "ran": [],
        "commands": [_cmdline(c) for c in commands],
    }
    warnings = []
    if not (h / "identity" / "node.key").exists():
        warnings.append(
            f"warning: {h} has no node identity yet: run `collab init` or `collab join TOKEN` "
            f"with --home {h} (as {who or 'you'}), or the service will fail to start"
        )
    if note:
        warnings.append(f"note: node home {h}: {note}")
    res["warnings"] = warnings
    if dry_run:
        res["text"] = text
        human = [f"# {path} (dry run: nothing written)", text.rstrip(), "", "# then run:"]
        human += [f"  {c}" for c in res["commands"]]
        out.data(res, "\n".join(human))
        _warn(out, warnings)
        return

    try:
        old = path.read_text() if path.exists() else None
        if old != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except PermissionError:
        out.error(f"cannot write {path}: permission denied (run with sudo, or use --user for a user unit)")
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as exc:
        out.error(f"cannot write {path}: {exc.strerror or exc}")
        raise typer.Exit(EXIT_ERROR) from None
    res["written"], res["changed"] = True, old != text
    verb = "wrote" if old is None else ("updated" if old != text else "unchanged:")
    runs_as = f", runs as {who}" if who else ", a user unit"
    human = [f"{verb} {path} (node home {h}{runs_as})"]
    code = 0
    if res["systemd"]:
        for argv in commands:
            done = _run(argv)
            res["ran"].append({"command": _cmdline(argv), "code": done.returncode, "stderr": done.stderr.strip()})
            if done.returncode != 0:
                human.append(f"failed: {_cmdline(argv)} (exit {done.returncode}): {done.stderr.strip()}")
                human.append("run the rest yourself once fixed:")
                human += [f"  {_cmdline(c)}" for c in commands[len(res["ran"]) - 1 :]]
                code = EXIT_ERROR
                break
            human.append(f"ran: {_cmdline(argv)}")
        else:
            journal = f"journalctl {'--user ' if user else ''}-u {unit} -f"
            human.append(f"{unit} is enabled and started; it starts at boot. Logs: {journal}")
    else:
        human.append(
            "systemd is not running here, so nothing was enabled or started. On a machine running systemd, run:"
        )
        human += [f"  {c}" for c in res["commands"]]
    if user:
        human.append(
            f"(a user unit runs while {su.invoking_user()} is logged in; to start it at boot without a login: "
            f"loginctl enable-linger {su.invoking_user()})"
        )
    out.data(res, "\n".join(human))
    _warn(out, warnings)
    raise typer.Exit(code)


@service_app.command("uninstall")
def uninstall(user: UserOpt = False, name: NameOpt = None, json_out: JsonOpt = False) -> None:
    """Stop and disable the unit (`systemctl disable --now`, when systemd runs here), then remove its file."""
    out = Out(json_out)
    unit = _unit_name(name)
    path = su.unit_path(user, name)
    res = {"path": str(path), "unit": unit, "user_mode": user, "existed": path.exists(), "removed": False, "ran": []}
    if not res["existed"]:
        out.data(res, f"no unit at {path}: nothing to remove")
        return
    human = []
    systemd = su.systemd_running()
    if systemd:
        argv = su.systemctl_argv(user, "disable", "--now", unit)
        done = _run(argv)
        res["ran"].append({"command": _cmdline(argv), "code": done.returncode, "stderr": done.stderr.strip()})
        human.append(f"ran: {_cmdline(argv)}" + (f" (exit {done.returncode})" if done.returncode else ""))
    try:
        path.unlink()
    except PermissionError:
        out.error(f"cannot remove {path}: permission denied (run with sudo)")
        raise typer.Exit(EXIT_ERROR) from None
    res["removed"] = True
    human.append(f"removed {path}")
    if systemd:
        argv = su.systemctl_argv(user, "daemon-reload")
        done = _run(argv)
        res["ran"].append({"command": _cmdline(argv), "code": done.returncode, "stderr": done.stderr.strip()})
        human.append(f"ran: {_cmdline(argv)}")
    out.data(res, "\n".join(human))


@service_app.command("status")
def status(user: UserOpt = False, name: NameOpt = None, json_out: JsonOpt = False) -> None:
    """Whether the unit file exists, its path and node home, and `systemctl is-active`/`is-enabled`."""
    out = Out(json_out)
    unit = _unit_name(name)
    path = su.unit_path(user, name)
    exists = path.exists()
    res = {
        "path": str(path),
        "unit": unit,
        "user_mode": user,
        "installed": exists,
        "home": su.unit_home(path.read_text()) if exists else None,
        "systemd": su.systemd_running(),
        "active": None,
        "enabled": None,
    }
    if res["systemd"]:
        for key, verb in (("active", "is-active"), ("enabled", "is-enabled")):
            done = _run(su.systemctl_argv(user, verb, unit))
            res[key] = done.stdout.strip() or done.stderr.strip() or None
    human = [f"{unit}: {'installed' if exists else 'not installed'} ({path})"]
    if res["home"]:
        human.append(f"node home: {res['home']}")
    if res["systemd"]:
        human.append(f"active: {res['active']}, enabled: {res['enabled']}")
    else:
        human.append("systemd is not running here (no active/enabled state to show)")
    out.data(res, "\n".join(human))


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")
