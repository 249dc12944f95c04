"""`collab service install|uninstall|status`: the systemd unit's text and the commands, without systemd or root.

The unit directory is redirected with $COLLAB_SYSTEMD_DIR; whether "systemd runs here" is decided by the
presence of $COLLAB_SYSTEMD_RUNTIME (a missing directory: not running; a temp directory plus a fake
`systemctl` on PATH that records its arguments: running).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from collab_tui import service_unit as su
from collab_tui.cli.main import app


def _lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Units in tmp/units, systemd not running, a home with an identity (no warning)."""
    units = tmp_path / "units"
    home = tmp_path / "node home"  # a space: ExecStart must quote it
    (home / "identity").mkdir(parents=True)
    (home / "identity" / "node.key").write_text("x")
    monkeypatch.setenv("COLLAB_SYSTEMD_DIR", str(units))
    monkeypatch.setenv("COLLAB_SYSTEMD_RUNTIME", str(tmp_path / "no-systemd"))
    monkeypatch.delenv("COLLAB_HOME", raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    return {"units": units, "home": home, "tmp": tmp_path}


def _invoke(*args: str):
    res = CliRunner().invoke(app, ["service", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def _fake_systemctl(tmp: Path, monkeypatch, fail: str | None = None) -> Path:
    """A `systemctl` on PATH that appends its arguments to a log (and fails when they contain ``fail``)."""
    bindir, log = tmp / "bin", tmp / "systemctl.log"
    bindir.mkdir()
    script = bindir / "systemctl"
    fail_clause = f'case "$*" in *{fail}*) echo "boom" >&2; exit 1;; esac\n' if fail else ""
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n{fail_clause}case "$1$2" in *is-*) echo active;; esac\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    runtime = tmp / "run-systemd"
    runtime.mkdir()
    monkeypatch.setenv("COLLAB_SYSTEMD_RUNTIME", str(runtime))
    return log


# --- the unit text ----------------------------------------------------------------------------------------


def test_system_unit_text(tmp_path):
    home = tmp_path / "h"
    text = su.render_unit(home, user_mode=False, user_name="alice", argv=["/opt/collab/bin/collab"])
    lines = _lines(text)
    assert f"ExecStart=/opt/collab/bin/collab daemon --home {home.absolute()}" in lines
    assert f'Environment="COLLAB_HOME={home.absolute()}"' in lines
    for line in (
        "User=alice",
        "Restart=on-failure",
        "RestartSec=2",
        "KillSignal=SIGTERM",
        "After=network-online.target",
        "Wants=network-online.target",
        "WantedBy=multi-user.target",
    ):
        assert line in lines, line
    stop = [ln for ln in lines if ln.startswith("TimeoutStopSec=")]
    assert stop and int(stop[0].split("=")[1]) >= 10  # room for the graceful leave
    # sections in order, each key inside the right one
    assert lines.index("[Unit]") < lines.index("After=network-online.target") < lines.index("[Service]")
    assert lines.index("[Service]") < lines.index("KillSignal=SIGTERM") < lines.index("[Install]")
    assert lines.index("[Install]") < lines.index("WantedBy=multi-user.target")
    assert su.unit_home(text) == str(home.absolute())


def test_user_unit_text(tmp_path):
    text = su.render_unit(tmp_path / "h", user_mode=True, argv=["/usr/bin/python3", "-m", "collab_tui"])
    lines = _lines(text)
    assert f"ExecStart=/usr/bin/python3 -m collab_tui daemon --home {(tmp_path / 'h').absolute()}" in lines
    assert "WantedBy=default.target" in lines
    assert "Restart=on-failure" in lines and "KillSignal=SIGTERM" in lines
    assert not any(ln.startswith("User=") for ln in lines)  # the user manager runs it as its user
    assert not any("network-online" in ln for ln in lines)  # a system target: not visible to user units
    assert "multi-user.target" not in text


def test_relative_home_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = su.render_unit(Path("rel/home"), user_mode=True, argv=["/x/collab"])
    assert f"--home {tmp_path / 'rel' / 'home'}" in text


def test_exec_start_quoting():
    assert su.quote_arg("/plain/path") == "/plain/path"
    assert su.quote_arg("/a b/c") == '"/a b/c"'
    assert su.quote_arg("/50%/x") == "/50%%/x"  # no specifier expansion
    assert su.quote_arg("/$HOME/x") == "/$$HOME/x"  # no variable expansion
    assert su.quote_arg('/a"b') == '"/a\\"b"'


def test_default_exec_is_this_interpreter_or_the_collab_script(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["/nonexistent/pytest"])
    assert su.collab_argv() == [os.path.abspath(sys.executable), "-m", "collab_tui"]
    script = tmp_path / "bin" / "collab"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "service", "install"])
    assert su.collab_argv() == [str(script)]


def test_unit_names_and_dirs(monkeypatch, tmp_path):
    monkeypatch.delenv("COLLAB_SYSTEMD_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert su.unit_path(False) == Path("/etc/systemd/system/collab.service")
    assert su.unit_path(False, "lab2") == Path("/etc/systemd/system/collab-lab2.service")
    assert su.unit_path(True) == tmp_path / "cfg" / "systemd" / "user" / "collab.service"
    for bad in ("../x", "a b", "a/b", "-x", "x@y"):
        with pytest.raises(ValueError):
            su.unit_name(bad)


# --- the commands -----------------------------------------------------------------------------------------


def test_install_dry_run_writes_nothing(env):
    res = _invoke("install", "--dry-run", "--home", str(env["home"]), "--user-name", "alice")
    assert res.exit_code == 0, res.output
    path = env["units"] / "collab.service"
    assert str(path) in res.stdout and "dry run" in res.stdout
    assert "User=alice" in res.stdout and "KillSignal=SIGTERM" in res.stdout
    assert f'--home "{env["home"]}"' in res.stdout  # absolute, quoted (the path has a space)
    assert "systemctl daemon-reload" in res.stdout and "systemctl enable --now collab.service" in res.stdout
    assert not path.exists() and not env["units"].exists()

    res = _invoke("install", "--dry-run", "--user", "--name", "n2", "--home", str(env["home"]), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["dry_run"] and not data["written"] and data["unit"] == "collab-n2.service"
    assert "WantedBy=default.target" in data["text"]
    assert data["commands"] == ["systemctl --user daemon-reload", "systemctl --user enable --now collab-n2.service"]
    assert not env["units"].exists()


def test_install_without_systemd_prints_the_commands(env):
    res = _invoke("install", "--home", str(env["home"]), "--user-name", "alice")
    assert res.exit_code == 0, res.output
    path = env["units"] / "collab.service"
    text = path.read_text()
    assert "User=alice" in text and "WantedBy=multi-user.target" in text
    assert su.unit_home(text) == str(env["home"])
    assert f"wrote {path}" in res.stdout
    assert "systemd is not running here" in res.stdout
    assert "  systemctl daemon-reload" in res.stdout and "  systemctl enable --now collab.service" in res.stdout
    assert oct(path.stat().st_mode & 0o777) == "0o644"

    again = _invoke("install", "--home", str(env["home"]), "--user-name", "alice", "--json")
    data = json.loads(again.stdout)
    assert again.exit_code == 0 and data["written"] and not data["changed"] and not data["systemd"]
    assert data["ran"] == [] and data["path"] == str(path)


def test_install_user_unit_and_uninstall(env):
    res = _invoke("install", "--user", "--name", "lab", "--home", str(env["home"]))
    assert res.exit_code == 0, res.output
    path = env["units"] / "collab-lab.service"
    assert "WantedBy=default.target" in path.read_text()
    assert "systemctl --user enable --now collab-lab.service" in res.stdout
    assert "loginctl enable-linger" in res.stdout

    st = json.loads(_invoke("status", "--user", "--name", "lab", "--json").stdout)
    assert st["installed"] and st["path"] == str(path) and st["home"] == str(env["home"])
    assert st["active"] is None and not st["systemd"]

    res = _invoke("uninstall", "--user", "--name", "lab")
    assert res.exit_code == 0 and f"removed {path}" in res.stdout
    assert not path.exists()
    st = json.loads(_invoke("status", "--user", "--name", "lab", "--json").stdout)
    assert not st["installed"] and st["home"] is None
    res = _invoke("uninstall", "--user", "--name", "lab")
    assert res.exit_code == 0 and "nothing to remove" in res.stdout


def test_status_human(env):
    res = _invoke("status")
    assert res.exit_code == 0 and "not installed" in res.stdout and str(env["units"]) in res.stdout
    _invoke("install", "--home", str(env["home"]))
    res = _invoke("status")
    assert res.exit_code == 0, res.output
    assert "collab.service: installed" in res.stdout and f"node home: {env['home']}" in res.stdout


def test_default_home_is_collab_home(env, monkeypatch):
    monkeypatch.setenv("COLLAB_HOME", str(env["home"]))
    data = json.loads(_invoke("install", "--dry-run", "--json").stdout)
    assert data["home"] == str(env["home"])
    assert data["exec_start"][-2:] == ["--home", str(env["home"])]


def test_uninitialized_home_warns(env):
    bare = env["tmp"] / "bare"
    res = _invoke("install", "--dry-run", "--home", str(bare))
    assert res.exit_code == 0
    assert "no node identity" in res.stderr and "collab init" in res.stderr


def test_bad_name_is_a_usage_error(env):
    res = _invoke("install", "--dry-run", "--name", "../etc", "--home", str(env["home"]))
    assert res.exit_code == 2


def test_with_systemd_runs_systemctl(env, monkeypatch):
    log = _fake_systemctl(env["tmp"], monkeypatch)
    res = _invoke("install", "--home", str(env["home"]), "--name", "a", "--user-name", "alice")
    assert res.exit_code == 0, res.output
    assert "ran: systemctl daemon-reload" in res.stdout and "ran: systemctl enable --now collab-a.service" in res.stdout
    assert "journalctl -u collab-a.service" in res.stdout
    st = json.loads(_invoke("status", "--name", "a", "--json").stdout)
    assert st["systemd"] and st["active"] == "active" and st["installed"]
    res = _invoke("uninstall", "--name", "a")
    assert res.exit_code == 0 and not (env["units"] / "collab-a.service").exists()
    assert _lines(log.read_text()) == [
        "daemon-reload",
        "enable --now collab-a.service",
        "is-active collab-a.service",
        "is-enabled collab-a.service",
        "disable --now collab-a.service",
        "daemon-reload",
    ]


def test_systemctl_failure_exits_1_with_the_remaining_commands(env, monkeypatch):
    _fake_systemctl(env["tmp"], monkeypatch, fail="enable")
    res = _invoke("install", "--user", "--home", str(env["home"]))
    assert res.exit_code == 1
    assert "failed: systemctl --user enable --now collab.service" in res.stdout and "boom" in res.stdout
    assert (env["units"] / "collab.service").exists()  # the file stays: fix, then run the printed command
