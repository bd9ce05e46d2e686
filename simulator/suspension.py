"""What each corner's accelerometer reports over one reading interval: the RMS and the peak of its vertical
acceleration, for the whole fleet at once (arrays [cars, 4], corners 1_1, 1_2, 2_1, 2_2).

The accelerometer sits on the wheel side of the suspension, where the wheel-hop resonance (about 12 Hz: the
unsprung mass between the tire and the suspension spring) dominates what it feels. The shock absorber damps that
resonance; a worn one (damping lost) lets the corner respond larger and ring longer than its axle partner under the
same road. The laws below are fitted to a two-mass quarter-car model (300 kg body, 40 kg wheel, 20 kN/m spring,
200 kN/m tire, damping ratio 0.3 of the body mode), simulated on a random road and on bumps: simulator/README.md,
"Accelerometers", gives the figures. Per interval, not per sample: a reading costs a few dozen random draws per car,
never a simulated signal.

Every draw is made for every car on every step, from fixed distributions (normals, uniforms) transformed with the
car's state, so the data depend on the seed alone and a failing car draws exactly what a healthy one would.
"""

from __future__ import annotations

import numpy as np

RMS_AT_100 = 1.5
"""m/s^2: a healthy corner's RMS at 100 km/h on a road of roughness 1 (excitation variance grows with speed)."""
FLOOR_RMS = 0.05
"""m/s^2: the engine's idle shake and the sensor's noise, felt when the car stands still too."""
HOP_HZ = 12.0
"""The wheel-hop resonance (Hz): how many oscillations an interval holds, for the statistics' sampling noise."""
HOP_DAMPING = 0.25
"""The wheel-hop mode's damping ratio with a healthy shock absorber."""
RESONANCE_EXPONENT = 1.1
"""A corner's mean-square response to the random road grows as (healthy damping / damping) ** 1.1."""
EVENT_ENERGY_EXPONENT = 1.3
"""Energy of the ringing after a bump or pothole, against damping (the ringing lasts longer)."""
EVENT_PEAK_EXPONENT = 0.4
"""Peak of the response to a bump or pothole, against damping."""
RINGING_S = 1.0 / (4 * HOP_DAMPING * 2 * np.pi * HOP_HZ)
"""Seconds: the energy of a decaying oscillation of peak P is P^2 times this (healthy damping)."""
EVENTS_PER_KM = 2.0
"""Bumps and potholes per kilometre on a road of roughness 1 (more on rougher roads)."""
PATCH_SIGMA = 0.3
"""Log-spread of the road section's roughness from one interval to the next, shared by the four wheels."""
TRACK_SIGMA = 0.4
"""Log-spread of each wheel's own track within the interval (patches, joints, ruts in one wheel track), half of it
shared with the wheel on the same side of the other axle (it follows the same track)."""
WHEEL_ON_EVENT_SIGMA = 0.25
"""Log-spread of how squarely each wheel of an axle meets the same bump."""
CORNER_SPREAD = 0.08
"""Healthy shock absorbers differ by up to +-8 % in damping, corner to corner (fixed per car)."""


def healthy_damping(rng: np.random.Generator, cars: int) -> np.ndarray:
    """Each corner's healthy damping relative to nominal, fixed per car: [cars, 4]."""
    return rng.uniform(1.0 - CORNER_SPREAD, 1.0 + CORNER_SPREAD, (cars, 4))


def _lognormal(z: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """A multiplier of mean 1 and log-spread sigma from standard normal draws z."""
    return np.exp(sigma * z - 0.5 * np.square(sigma))


def accelerometers(
    rng: np.random.Generator,
    speed_kmh: np.ndarray,
    roughness: np.ndarray,
    damping: np.ndarray,
    interval_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(RMS, peak) of each corner's vertical acceleration over one interval, m/s^2, [cars, 4].

    `speed_kmh` is the mean speed over the interval [cars], `roughness` the road's [cars] (1: an average road),
    `damping` each corner's damping relative to a nominal healthy shock absorber [cars, 4] (a worn one: below 1).
    """
    n = len(speed_kmh)
    speed = np.maximum(speed_kmh, 0.0)[:, None]
    rough = roughness[:, None]
    softer = 1.0 / damping  # > 1 for a worn shock absorber

    # The random road (ISO 8608: a road profile's velocity is white noise whose intensity grows with speed), its
    # roughness varying by section and by wheel track; both wheels of a side follow one track.
    patch = _lognormal(rng.standard_normal((n, 1)), PATCH_SIGMA)
    side = np.repeat(rng.standard_normal((n, 2)), 2, axis=1)[:, [0, 2, 1, 3]]  # left: 1_1, 2_1; right: 1_2, 2_2
    track = _lognormal(np.sqrt(0.5) * side + np.sqrt(0.5) * rng.standard_normal((n, 4)), TRACK_SIGMA)
    road_ms = RMS_AT_100**2 * np.square(rough) * (speed / 100.0) * patch * track * softer**RESONANCE_EXPONENT
    # An interval's mean square is an estimate from a finite record: about 2 x bandwidth x T degrees of freedom,
    # fewer when the resonance is sharper (less damping), so a worn corner's figures scatter more.
    dof = np.maximum(2.0 * (2.0 * HOP_DAMPING * damping * HOP_HZ) * interval_s, 2.0)
    road_ms = road_ms * _lognormal(rng.standard_normal((n, 4)), np.sqrt(np.log1p(2.0 / dof)))

    # Road events: up to two per interval, each hitting both wheels of the front axle, then of the rear one
    # (the same bump, a wheelbase later: within the interval), each wheel meeting it a little differently.
    distance_km = speed / 3600.0 * interval_s
    chance = 1.0 - np.exp(-EVENTS_PER_KM * rough * distance_km / 2.0)  # [n, 1] per slot
    happens = rng.random((n, 2)) < chance
    size = rng.uniform(2.0, 8.0, (n, 2)) * (0.3 + speed / 100.0)  # healthy corner's peak, m/s^2
    wheel = _lognormal(rng.standard_normal((n, 2, 4)), WHEEL_ON_EVENT_SIGMA)
    event_peak = np.where(happens, size, 0.0)[:, :, None] * wheel * softer[:, None, :] ** EVENT_PEAK_EXPONENT
    healthy_peak = np.where(happens, size, 0.0)[:, :, None] * wheel
    event_energy = (np.square(healthy_peak) * RINGING_S * softer[:, None, :] ** EVENT_ENERGY_EXPONENT).sum(axis=1)

    steady_ms = FLOOR_RMS**2 + road_ms
    rms = np.sqrt(steady_ms + event_energy / interval_s)
    # The largest of about HOP_HZ x T oscillations of a Gaussian process: sqrt(2 ln N) RMS, Gumbel-scattered.
    spread = np.sqrt(2.0 * np.log(max(HOP_HZ * interval_s, 2.0)))
    gumbel = -np.log(-np.log(np.clip(rng.random((n, 4)), 1e-12, 1.0 - 1e-12)))
    steady_peak = np.sqrt(steady_ms) * np.maximum(spread + (gumbel - 0.5772) / spread, 1.0)
    peak = np.maximum(np.maximum(steady_peak, event_peak.max(axis=1)), rms)
    return rms, peak
