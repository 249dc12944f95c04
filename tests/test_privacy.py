"""The privacy accountant and the swamp check (training/privacy.py), without a cluster."""

from __future__ import annotations

import math

import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from collab_tui.training.privacy import DEFAULT_DELTA, plan, spent, swamp, swamp_warning


def _exact_gaussian_epsilon(noise: float, rounds: int, delta: float) -> float:
    """The tight epsilon of `rounds` Gaussian mechanisms (Balle & Wang 2018): their composition is one
    Gaussian mechanism with mu = sqrt(rounds) / noise; solve delta(eps) = delta."""
    mu = math.sqrt(rounds) / noise

    def gap(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(gap, 0.0, 700.0)


def test_epsilon_is_the_rdp_accountants_and_bounds_the_exact_value():
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.1), 10))
    assert spent(1.1, 10, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)  # the library's value
    for noise, rounds in ((1.1, 10), (0.5, 3), (4.0, 100)):
        exact = _exact_gaussian_epsilon(noise, rounds, DEFAULT_DELTA)
        rdp = spent(noise, rounds)
        assert exact <= rdp <= 1.6 * exact + 0.5, (noise, rounds, exact, rdp)  # an upper bound, and a close one


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    assert spent(1.0, 1) < spent(1.0, 10) < spent(1.0, 100)
    assert spent(2.0, 10) < spent(1.0, 10)
    assert spent(0.0, 10) == math.inf and spent(1.0, 0) == 0.0


def test_the_swamp_warning_fires_for_the_setting_that_drove_the_model_to_chance_and_not_for_a_mild_one():
    params = 2_410  # the size of a small digits model
    loud = swamp_warning(0.5, 1.0, 3, params)
    assert loud and "swamps" in loud and "clients at this noise" in loud and "--dp-noise" in loud
    assert swamp(0.5, 3, params) > 10
    assert swamp_warning(0.001, 1.0, 3, params) is None
    # more clients cure it: the warning names how many
    need = int(loud.split("take ")[1].split(" clients")[0].replace(",", ""))
    assert swamp_warning(0.5, 1.0, need, params) is None and swamp_warning(0.5, 1.0, need // 2, params)


def test_plan_reports_the_whole_run_and_one_round():
    p = plan(1.0, 1.0, 10, 3, 100)
    assert p["epsilon"] == round(spent(1.0, 10), 4) and p["epsilon_per_round"] == round(spent(1.0, 1), 4)
    assert p["delta"] == DEFAULT_DELTA and "warning" in p  # sqrt(100 / 3) > 1
