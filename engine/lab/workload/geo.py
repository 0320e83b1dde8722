"""Countries the bank simulation uses, with rough centroids for travel distances.

Fraud rules that compare two transaction countries need a distance; the
impossible-travel scenario only pairs countries more than `FAR_KM` apart, and
normal travellers take at least the flight time `flight_us` between countries.
"""

from __future__ import annotations

import math

from engine.lab.workload.plan import US_PER_H

#: code -> (latitude, longitude) of a point near the country's population centre.
COORDS: dict[str, tuple[float, float]] = {
    "DE": (51.0, 10.0),
    "FR": (46.6, 2.4),
    "NL": (52.2, 5.3),
    "BE": (50.6, 4.6),
    "AT": (47.6, 14.1),
    "ES": (40.4, -3.7),
    "IT": (42.8, 12.6),
    "PT": (39.6, -8.0),
    "PL": (52.1, 19.4),
    "IE": (53.3, -7.7),
    "GR": (39.1, 22.9),
    "HR": (45.1, 15.2),
    "GB": (52.6, -1.5),
    "US": (39.8, -98.6),
    "BR": (-14.2, -51.9),
    "TH": (15.9, 100.9),
    "JP": (36.2, 138.3),
    "ZA": (-30.6, 22.9),
    "NG": (9.1, 8.7),
    "IN": (21.1, 78.0),
    "MX": (23.6, -102.6),
    "AU": (-25.3, 133.8),
}

#: Where customers live (weighted by repetition).
HOME_COUNTRIES = ("DE", "DE", "DE", "FR", "FR", "NL", "BE", "AT", "ES", "IT", "PL", "IE")
#: Where normal customers travel to.
TRAVEL_COUNTRIES = ("ES", "IT", "PT", "GR", "HR", "FR", "AT", "GB", "US", "TH")
#: Where fraudsters appear from.
FRAUD_COUNTRIES = ("BR", "NG", "TH", "IN", "MX", "US", "ZA", "JP")
#: Every country that has local (card-present) merchants.
MERCHANT_COUNTRIES = tuple(
    sorted(set(HOME_COUNTRIES) | set(TRAVEL_COUNTRIES) | set(FRAUD_COUNTRIES))
)

FAR_KM = 3000.0


def distance_km(a: str, b: str) -> float:
    """Great-circle distance between two countries' centroids."""
    (lat1, lon1), (lat2, lon2) = COORDS[a], COORDS[b]
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def far_from(country: str) -> tuple[str, ...]:
    """Fraud countries at least `FAR_KM` from `country`, in a fixed order."""
    return tuple(c for c in FRAUD_COUNTRIES if distance_km(country, c) >= FAR_KM)


def flight_us(a: str, b: str) -> int:
    """Door-to-door travel time: 2 h plus the flight at 800 km/h."""
    return int((2.0 + distance_km(a, b) / 800.0) * US_PER_H)
