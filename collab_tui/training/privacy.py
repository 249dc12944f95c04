"""What client-side differential privacy costs and buys: the privacy spent, and whether noise swamps learning.

With ``--dp-clip C --dp-noise s`` every client clips its update (the change it made to the weights) to norm
C and adds Gaussian noise of standard deviation s*C to every coordinate (ml/updates.py, ``dp_privatize``):
a Gaussian mechanism with noise multiplier s on the client's whole update, so the unit protected is a
client's whole local dataset. The master picks the clients, so no amplification by sampling is claimed:
a client's privacy loss composes over every round it trained in.

* :func:`spent` asks Google's ``dp-accounting`` RDP accountant (the one TF Privacy uses) for the epsilon of
  ``rounds`` Gaussian mechanisms at a given delta. ``dp_accounting`` costs ~2 s to import: call this off
  the event loop.
* :func:`swamp` compares, per coordinate of the aggregate, the averaged noise (s*C/sqrt(n) for n clients)
  with what a clipped update carries (at most C/sqrt(d) on average over d weights): their ratio
  s*sqrt(d/n) does not depend on C. Past 1 the noise is larger than anything the clients can say, and the
  model does not learn (on three nodes, s = 0.5 drives the digits model to chance). The warning says what
  would help: more clients, less noise (which fewer rounds make affordable for the same epsilon), or a
  clip closer to the real update norms (a clip far above them only adds noise).
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_DELTA", "SWAMP_RATIO", "spent", "swamp", "swamp_warning", "plan"]

DEFAULT_DELTA = 1e-5
SWAMP_RATIO = 1.0  # averaged noise per coordinate over a clipped update's share


def spent(noise: float, rounds: int, delta: float = DEFAULT_DELTA) -> float:
    """Epsilon after ``rounds`` rounds at noise multiplier ``noise`` (inf without noise)."""
    if noise <= 0:
        return math.inf
    if rounds <= 0:
        return 0.0
    import dp_accounting

    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise), rounds))
    return float(acc.get_epsilon(delta))


def swamp(noise: float, clients: int, params: int) -> float:
    """Averaged noise per coordinate over a clipped update's share of the clip: ``noise * sqrt(d / n)``."""
    return noise * math.sqrt(max(1, params) / max(1, clients))


def swamp_warning(noise: float, clip: float, clients: int, params: int) -> str | None:
    """What to tell the operator when the noise swamps the updates at this number of clients, or None."""
    ratio = swamp(noise, clients, params)
    if noise <= 0 or ratio <= SWAMP_RATIO:
        return None
    need_clients = math.ceil(noise**2 * params / SWAMP_RATIO**2)
    max_noise = SWAMP_RATIO * math.sqrt(clients / max(1, params))
    return (
        f"differential privacy: the noise swamps the updates ({ratio:.1f}x): per coordinate the averaged noise "
        f"({noise:g} x {clip:g} / sqrt({clients}) = {noise * clip / math.sqrt(max(1, clients)):.3g}) is larger "
        f"than a clipped update carries ({clip:g} / sqrt({params}) = {clip / math.sqrt(max(1, params)):.3g}); "
        f"the model will not learn. It would take {need_clients:,} clients at this noise, or --dp-noise "
        f"{max_noise:.2g} or less with {clients} (fewer rounds keep the same epsilon with less noise), and a "
        "--dp-clip close to the real update norms"
    )


def plan(noise: float, clip: float, rounds: int, clients: int, params: int, delta: float = DEFAULT_DELTA) -> dict:
    """What a run will spend and whether it can learn, before it starts."""
    eps = spent(noise, rounds, delta)
    out: dict = {
        "epsilon": round(eps, 4) if math.isfinite(eps) else None,
        "delta": delta,
        "epsilon_per_round": round(spent(noise, 1, delta), 4) if noise > 0 else None,
        "swamp": round(swamp(noise, clients, params), 3),
        "clients": clients,
        "params": params,
    }
    warning = swamp_warning(noise, clip, clients, params)
    if warning:
        out["warning"] = warning
    return out
