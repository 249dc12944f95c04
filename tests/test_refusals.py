"""RefusalLog (sans-IO): one line per source and reason per interval, however long the flood."""

from __future__ import annotations

from collab_tui.net.refusals import RefusalLog


def test_a_flood_gives_one_line_at_once_then_one_summary_per_interval():
    log = RefusalLog(interval=10.0)
    lines = [log.note("10.0.0.9", "TLS: CERTIFICATE_VERIFY_FAILED", t * 0.05) for t in range(200)]
    shown = [line for line in lines if line]
    assert len(shown) == 1 and "10.0.0.9" in shown[0] and "CERTIFICATE_VERIFY_FAILED" in shown[0]
    assert log.flush(9.99) == []
    (summary,) = log.flush(10.0)
    assert summary == "refused 199 more connections from 10.0.0.9 in 10 s: TLS: CERTIFICATE_VERIFY_FAILED"
    assert log.total == 200
    # the flood stops: one quiet interval closes the window, and the next refusal is shown at once again
    assert log.flush(20.0) == []
    assert log.note("10.0.0.9", "TLS: CERTIFICATE_VERIFY_FAILED", 21.0) is not None


def test_sources_and_reasons_are_summarised_separately():
    log = RefusalLog(interval=5.0)
    assert log.note("a", "plaintext", 0.0)
    assert log.note("b", "plaintext", 0.0)
    assert log.note("a", "bad hello", 0.0)
    assert log.note("a", "plaintext", 1.0) is None
    assert log.flush(5.0) == ["refused 1 more connection from a in 5 s: plaintext"]


def test_state_stays_bounded_under_a_flood_from_many_addresses():
    log = RefusalLog(interval=10.0, max_keys=8)
    shown = [log.note(f"10.0.{i // 256}.{i % 256}", "plaintext", 0.0) for i in range(1000)]
    assert sum(1 for line in shown if line) == 9  # 8 sources, then "other sources" once
    assert len(log._open) == 9
    (*_, other) = sorted(log.flush(10.0))
    assert "other sources" in other


def test_a_stranger_varying_the_reason_still_gets_a_few_lines():
    log = RefusalLog(interval=10.0)
    shown = [log.note("10.0.0.9", f"unknown join token {k} {'x' * 1000}", 0.0) for k in range(100)]
    lines = [line for line in shown if line]
    assert len(lines) == 5  # 4 reasons of its own, then "other reasons"
    assert all(len(line) < 300 for line in lines)
    (summary,) = log.flush(10.0)
    assert summary == "refused 95 more connections from 10.0.0.9 in 10 s: other reasons"
