"""Shared helpers for the multi-process tests: run the real CLI in a subprocess, wait with a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def clean_env() -> dict:
    """The environment without COLLAB_* overrides (every test passes --home explicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}


def run_cli(*args: str, timeout: float = 30.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m collab_tui ARGS` as a subprocess (text mode, captured output, with a timeout)."""
    return subprocess.run(
        [PYTHON, "-m", "collab_tui", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env or clean_env(),
    )


def run_cli_json(*args: str, timeout: float = 30.0):
    """Run a CLI command with --json; assert success and return the parsed stdout."""
    res = run_cli(*args, "--json", timeout=timeout)
    assert res.returncode == 0, f"{args}: exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return json.loads(res.stdout)


def wait_for(pred: Callable[[], object], timeout: float, what: str, poll: float = 0.05):
    """Poll ``pred`` until it returns something truthy (exceptions count as "not yet")."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
        except Exception as exc:  # noqa: BLE001 - "not yet"
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else "")
    )


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def cli_json():
    return run_cli_json


def wait_job(c, i: int, job_id: str, timeout: float = 60.0) -> dict:
    """Poll `job_show` on node i until the job is no longer running; returns the job."""

    def finished():
        job = c.call(i, "job_show", job_id=job_id, timeout=5.0)
        return job if job["status"] != "running" else None

    return wait_for(finished, timeout, f"job {job_id} on node{i} to finish", poll=0.1)


def three_node_cluster(agreed: bool = False):
    """A provisioned, started 3-node cluster with priorities 0 < 1 < 2 (node2 is the master): the
    generator body of the module-scoped `cluster` fixtures of the multi-process test modules. With
    ``agreed`` it is handed over once all three agree on the master."""
    from collab_tui.localcluster import LocalCluster

    c = LocalCluster(3, priorities=[0, 1, 2], heartbeat=0.2)
    try:
        c.provision()
        c.start_all()
        if agreed:
            c.wait_agreement(timeout=20)
        yield c
    finally:
        c.close()


def self_signed_node_cert(key):
    """A node certificate for ``key`` (its node id as the name) that no cluster CA issued: signed by the
    key itself, valid from 5 minutes ago for a day."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from collab_tui.net.pki import node_id_of

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id_of(key.public_key()))])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def screen_text(app) -> str:
    """The screen as plain text (for readable failure diffs)."""
    from rich.console import Console

    console = Console(
        width=app.size.width,
        height=app.size.height,
        record=True,
        color_system=None,
        file=open(os.devnull, "w"),
        legacy_windows=False,
    )
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()
