"""`collab doctor`: the judgements as pure functions (a fake clock for the skew), then the real CLI against a
3-node cluster on loopback: healthy (exit 0, every check present, TensorFlow imported once in the ML
process), a stopped daemon (exit 3, "start it"), a static peer where nothing listens (FAIL for that check)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import subprocess
import sys

import pytest
from conftest import REPO, clean_env, run_cli, three_node_cluster

from collab_tui.cli import doctor as cli_doctor
from collab_tui.node import doctor as nd

ALL_CHECKS = [
    "daemon",
    "listen_port",
    "mdns",
    "static_peers",
    "clock_skew",
    "node_certificate",
    "ca_certificate",
    "disk_space",
    "ml_imports",
    "versions",
]
DEAD_ADDR = "127.0.0.1:1"  # nothing listens on port 1


# --------------------------------------------------------------------------- clock skew, fake clock
class FakeClock:
    def __init__(self, *ticks: float) -> None:
        self.ticks = list(ticks)

    def __call__(self) -> float:
        return self.ticks.pop(0)


def _skew(peer_time: float, sent: float = 100.0, received: float = 100.2) -> tuple[float, float]:
    async def ping() -> dict:
        return {"pong": peer_time}

    return asyncio.run(nd.measure_skew(ping, FakeClock(sent, received)))


def test_skew_is_measured_against_the_midpoint_of_the_round_trip():
    skew, rtt = _skew(100.1)
    assert skew == pytest.approx(0.0) and rtt == pytest.approx(0.2)
    skew, _ = _skew(98.6)
    assert skew == pytest.approx(-1.5)


@pytest.mark.parametrize(
    ("peer_time", "status"),
    [(100.1, "PASS"), (101.0, "PASS"), (101.3, "WARN"), (98.0, "WARN"), (130.0, "WARN"), (131.0, "FAIL"), (0, "FAIL")],
)
def test_skew_thresholds(peer_time, status):
    res = nd.skew_check({"node1": _skew(peer_time)})
    assert res["status"] == status, res
    assert (res["hint"] == "") == (status == "PASS")
    if status != "PASS":
        assert "NTP" in res["hint"]


def test_skew_check_worst_peer_wins_and_errors_warn():
    res = nd.skew_check({"a": (0.1, 0.01), "b": (45.0, 0.01), "c": "TimeoutError"})
    assert res["status"] == "FAIL" and "b +45.000 s" in res["detail"] and "c: no answer" in res["detail"]
    assert nd.skew_check({"a": (0.1, 0.01), "c": "TimeoutError"})["status"] == "WARN"
    assert nd.skew_check({})["status"] == "PASS"
    assert nd.skew_check({}, expected_peers=2)["status"] == "WARN"


def test_ping_without_a_time_is_an_error():
    async def ping() -> dict:
        return {"ok": True}

    with pytest.raises(ValueError):
        asyncio.run(nd.measure_skew(ping, FakeClock(1.0, 2.0)))


# --------------------------------------------------------------------------- the other judgements
def test_cert_check():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    ok = nd.cert_check("c", "cert", now + dt.timedelta(days=200), now, "re-join")
    soon = nd.cert_check("c", "cert", now + dt.timedelta(days=10), now, "re-join")
    gone = nd.cert_check("c", "cert", now - dt.timedelta(seconds=1), now, "re-join")
    assert [ok["status"], soon["status"], gone["status"]] == ["PASS", "WARN", "FAIL"]
    assert "expired" in gone["detail"] and gone["hint"] == "re-join"


def test_disk_check(tmp_path):
    assert nd.disk_check(tmp_path, free=5 * 1024**3)["status"] == "PASS"
    assert nd.disk_check(tmp_path, free=500 * 1024**2)["status"] == "WARN"
    assert nd.disk_check(tmp_path, free=50 * 1024**2)["status"] == "FAIL"
    assert nd.disk_check(tmp_path)["status"] in ("PASS", "WARN", "FAIL")  # the real disk


def test_version_check():
    same = [{"name": "b", "version": "0.1.0", "protocol": 1}]
    assert nd.version_check(same, "0.1.0", 1)["status"] == "PASS"
    assert nd.version_check([], "0.1.0", 1)["status"] == "PASS"
    bad = nd.version_check(same + [{"name": "c", "version": "0.2.0", "protocol": 1}], "0.1.0", 1)
    assert bad["status"] == "FAIL" and "c runs collab 0.2.0" in bad["detail"] and bad["hint"]
    silent = nd.version_check([{"name": "d", "version": None, "protocol": 1}], "0.1.0", 1)
    assert silent["status"] == "PASS" and "do not report" in silent["detail"]


def test_mdns_check():
    members = {"a" * 64: "node1", "b" * 64: "node2"}
    heard = {f"node1-{'a' * 8}._collab._tcp.local.", f"node2-{'b' * 8}._collab._tcp.local."}
    assert nd.mdns_check(True, True, ["127.0.0.1"], heard, members, 0)["status"] == "PASS"
    deaf = nd.mdns_check(True, True, [], set(), members, 0)
    assert deaf["status"] == "WARN" and "--peer" in deaf["hint"] and "all interfaces" in deaf["detail"]
    assert nd.mdns_check(True, False, [], set(), {}, 0)["status"] == "FAIL"
    assert nd.mdns_check(False, False, [], set(), members, 1)["status"] == "PASS"
    assert nd.mdns_check(False, False, [], set(), {}, 0)["status"] == "WARN"


def test_ml_check():
    assert nd.ml_check({"tensorflow": "2.1", "keras": "3", "opencv": "4", "seconds": 5})["status"] == "PASS"
    bad = nd.ml_check({"tensorflow_error": "ModuleNotFoundError: no tensorflow", "opencv": "4"})
    assert bad["status"] == "FAIL" and "opencv 4" in bad["detail"] and bad["hint"]
    assert nd.ml_check("no answer within 60 s")["status"] == "FAIL"


def test_cli_port_and_static_peer_checks_with_a_fake_probe():
    probe = {"10.0.0.1:7373": None, "10.0.0.2:7373": "connection refused"}.get
    assert cli_doctor.port_check(["10.0.0.1:7373"], probe)["status"] == "PASS"
    bad = cli_doctor.port_check(["10.0.0.1:7373", "10.0.0.2:7373"], probe)
    assert bad["status"] == "FAIL" and "10.0.0.2:7373: connection refused" in bad["detail"] and "7373" in bad["hint"]
    assert cli_doctor.port_check([], probe)["status"] == "FAIL"
    assert cli_doctor.static_peers_check([], probe)["status"] == "PASS"
    assert cli_doctor.static_peers_check(["10.0.0.2:7373"], probe)["status"] == "FAIL"


def test_real_tcp_probe():
    assert cli_doctor.tcp_probe(DEAD_ADDR, timeout=1.0) is not None
    assert cli_doctor.tcp_probe("nonsense") == "not host:port"


def test_line_format():
    c = {"name": "clock_skew", "status": "WARN", "detail": "node1 +2.000 s", "hint": "use NTP"}
    assert cli_doctor.line(c) == "WARN  clock_skew: node1 +2.000 s — use NTP"
    assert cli_doctor.line({**c, "status": "PASS"}) == "PASS  clock_skew: node1 +2.000 s"


# --------------------------------------------------------------------------- no daemon
def test_no_daemon_fails_with_the_start_hint(tmp_path):
    res = run_cli("doctor", "--home", tmp_path / "nobody", "--no-ml")
    assert res.returncode == 3, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("FAIL  daemon:") and "start it: collab daemon" in lines[0]
    assert [ln.split()[1].rstrip(":") for ln in lines] == ALL_CHECKS
    assert all(ln.startswith(("FAIL", "PASS")) for ln in lines)  # static_peers: none configured


def test_doctor_loads_no_heavy_modules(tmp_path):
    probe = (
        "import sys\nsys.argv = ['collab', 'doctor', '--home', sys.argv[1]]\n"
        "from collab_tui.cli import main\ntry:\n    main.main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', 'textual', 'cv2'}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=clean_env(),
    )
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr


# --------------------------------------------------------------------------- a real cluster
@pytest.fixture(scope="module")
def cluster():
    yield from three_node_cluster(agreed=True)


def _doctor(home, *extra: str, timeout: float = 150.0) -> tuple[int, dict]:
    res = run_cli("doctor", "--home", home, "--json", *extra, timeout=timeout)
    return res.returncode, json.loads(res.stdout)


@pytest.mark.timeout(200)
def test_healthy_cluster(cluster):
    """Every check, with the ML process importing TensorFlow and OpenCV (the one slow test: ~10 s)."""
    code, report = _doctor(cluster.homes[0])
    checks = {c["name"]: c for c in report["checks"]}
    assert [c["name"] for c in report["checks"]] == ALL_CHECKS
    assert code == 0 and report["ok"], report
    assert all(c["status"] in ("PASS", "WARN") for c in report["checks"]), report
    for name in ("daemon", "listen_port", "static_peers", "node_certificate", "ca_certificate", "ml_imports"):
        assert checks[name]["status"] == "PASS", checks[name]
    assert "tensorflow" in checks["ml_imports"]["detail"] and "opencv" in checks["ml_imports"]["detail"]
    assert "node1" in checks["clock_skew"]["detail"] and "node2" in checks["clock_skew"]["detail"]
    assert "127.0.0.1" in checks["mdns"]["detail"]
    assert "on all 3 nodes" in checks["versions"]["detail"]


def test_human_output(cluster):
    res = run_cli("doctor", "--home", cluster.homes[2], "--no-ml")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert [ln.split()[1].rstrip(":") for ln in lines] == ALL_CHECKS
    assert lines[0].startswith("PASS  daemon: node2")


def test_stopped_daemon(cluster):
    cluster.kill(1, signal.SIGTERM)
    assert cluster.wait_exit(1) is not None
    res = run_cli("doctor", "--home", cluster.homes[1], "--no-ml")
    assert res.returncode == 3
    assert "FAIL  daemon:" in res.stdout and "start it: collab daemon" in res.stdout
    assert "not checked" in res.stdout


def test_static_peer_where_nothing_listens(cluster):
    if 1 in cluster.running():
        cluster.kill(1, signal.SIGTERM)
        cluster.wait_exit(1)
    cluster.start(1, extra=["--peer", DEAD_ADDR])
    code, report = _doctor(cluster.homes[1], "--no-ml")
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 1 and not report["ok"]
    assert checks["static_peers"]["status"] == "FAIL" and DEAD_ADDR in checks["static_peers"]["detail"]
    assert checks["daemon"]["status"] == "PASS" and checks["listen_port"]["status"] == "PASS"
    assert [c["name"] for c in report["checks"] if c["status"] == "FAIL"] == ["static_peers"]
