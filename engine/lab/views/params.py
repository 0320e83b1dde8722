"""The views' named parameters from the settings, for tests, benchmarks and simulations.

The mapping `engine.app.wiring.attach_views` hands the engine's views, by the same
rule: every `fraud_*` / `leaderboard_*` setting ($fraud_tiny_eur, ...), the fields
of the settings' `views` section.
"""

from __future__ import annotations

from engine.core.config import Settings


def view_params(settings: Settings) -> dict[str, object]:
    names = [n for n in vars(settings.views) if n.startswith(("fraud_", "leaderboard_"))]
    return {n: getattr(settings.views, n) for n in sorted(names)}
