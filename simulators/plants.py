"""Signal models of each plant type (domain.md §1): a schedule ("plan") first, then noise-free signals.

A model works in two steps so that fault scenarios can ask for operating conditions before the signals exist:

1. `plan(start_ms, n, rng)` draws the operating schedule: receiving and issuing of the tank, reactor batches,
   production shifts, casting drops. A scenario's `arrange` edits the plan (e.g. "a steady cast with 2500 mm
   cast at the injection time").
2. `synthesize(site, start_ms, n, plan, seed)` turns the plan into a `Trace` of truth signals with process
   dynamics: level rising while receiving, pressure following temperature, fans and production on shifts,
   diurnal ambient. A scenario's `inject` then edits the trace, and `simulators.payload` adds noise.

Every output is a deterministic function of the seed and the parameters.

Enum codes (the rule packs compare numbers):
    casting_phase: 0 idle, 1 prepare, 2 start, 3 steady, 4 end
    casting_mode:  0 auto, 1 manual_maint, 2 simulation
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from simulators.signals import (
    QUALITY_GOOD,
    StateSeries,
    TagSpec,
    Trace,
    ambient_c,
    dead_time,
    first_order,
    local_hour,
    rng_for,
)

PHASE_IDLE, PHASE_PREPARE, PHASE_START, PHASE_STEADY, PHASE_END = 0, 1, 2, 3, 4
MODE_AUTO, MODE_MANUAL_MAINT, MODE_SIMULATION = 0, 1, 2

_ = QUALITY_GOOD


def _a(name: str, unit: str, period_s: int, noise: float, decimals: int, lo: float, hi: float,
       description: str = "") -> TagSpec:
    return TagSpec(name, unit, "analog", period_s, noise, decimals, (lo, hi), description)


def _b(name: str, description: str = "") -> TagSpec:
    return TagSpec(name, "", "bool", 0, 0.0, 0, (0.0, 1.0), description)


def _e(name: str, lo: float, hi: float, description: str = "") -> TagSpec:
    return TagSpec(name, "", "enum", 0, 0.0, 0, (lo, hi), description)


def slow_wander(rng: np.random.Generator, n: int, amp: float, knot_s: int) -> np.ndarray:
    """A smooth random excursion of about ±`amp`: random knots every `knot_s` seconds, linearly joined."""
    k = n // knot_s + 2
    knots = rng.uniform(-amp, amp, size=k)
    return np.interp(np.arange(n), np.arange(k) * knot_s, knots)


def _in_intervals(n: int, intervals: list[tuple[float, float]]) -> np.ndarray:
    """A 0/1 grid array, 1 inside any `[start_s, end_s)`."""
    out = np.zeros(n, dtype=np.float64)
    for a, b in intervals:
        i0, i1 = max(math.ceil(a), 0), min(math.ceil(b), n)
        if i1 > i0:
            out[i0:i1] = 1.0
    return out


def _state_from_intervals(n: int, intervals: list[tuple[float, float]], inside: float = 1.0,
                          outside: float = 0.0) -> StateSeries:
    s = StateSeries(outside)
    for a, b in sorted(intervals):
        if b <= 0 or a >= n:
            continue
        s.set(max(int(a * 1000), 0), inside)
        s.set(int(b * 1000), outside)
    return s


class PlantModel:
    """Common interface. Subclasses define `plant`, `TAGS`, `plan` and `synthesize`."""

    plant: str = ""
    TAGS: ClassVar[dict[str, TagSpec]] = {}

    def plan(self, start_ms: int, n: int, rng: np.random.Generator) -> object:  # pragma: no cover
        raise NotImplementedError

    def synthesize(self, site: str, start_ms: int, n: int, plan: object, seed: int) -> Trace:  # pragma: no cover
        raise NotImplementedError


# =============================================================================================
# 1a. Hazardous chemicals: LPG sphere + one batch reactor + gas detectors


@dataclass
class HazchemPlan:
    """Tank level as waypoints `(offset_s, level_pct)` (linear between), and reactor feed batches."""

    level_waypoints: list[tuple[float, float]]
    batches: list[tuple[float, float]]  # (feed_start_s, feed_end_s); reaction continues 30 min after feed
    react_after_feed_s: float = 1800.0

    def level_at(self, t_s: float) -> float:
        ts, ls = zip(*self.level_waypoints, strict=True)
        return float(np.interp(t_s, ts, ls))

    def splice_level(self, points: list[tuple[float, float]], rate_pct_s: float = 0.25 / 60) -> None:
        """Make the level follow `points`, joined to the regular schedule by gentle ramps on both sides.

        The ramps run at `rate_pct_s` (0.25 %/min by default, slower than any receiving that a trend rule
        would flag), so a scenario can demand "level at 70 when receiving starts" without a step.
        """
        t_first, l_first = points[0]
        t_last, l_last = points[-1]
        t_in = t_first - abs(l_first - self.level_at(t_first)) / rate_pct_s
        t_in = t_first - abs(l_first - self.level_at(t_in)) / rate_pct_s
        t_out = t_last + abs(l_last - self.level_at(t_last)) / rate_pct_s
        t_out = t_last + abs(l_last - self.level_at(t_out)) / rate_pct_s
        before = [p for p in self.level_waypoints if p[0] < t_in]
        after = [p for p in self.level_waypoints if p[0] > t_out]
        self.level_waypoints = [*before, (t_in, self.level_at(t_in)), *points,
                                (t_out, self.level_at(t_out)), *after]


class HazchemPlant(PlantModel):
    """Tank farm (an LPG sphere), one batch reactor, three LEL detectors, NH3 and O2, ESD valve, SIS bypass."""

    plant = "hazchem"
    TAGS: ClassVar[dict[str, TagSpec]] = {t.name: t for t in [
        _a("tank_level_pct", "%", 5, 0.3, 1, 0, 100, "LPG sphere level, % span"),
        _a("tank_temp_c", "degC", 10, 0.1, 1, -20, 80, "LPG sphere temperature"),
        _a("tank_pressure_mpa", "MPa", 5, 0.005, 3, 0, 2.5, "LPG sphere pressure (gauge), follows temperature"),
        _a("reactor_temp_c", "degC", 1, 0.1, 2, 0, 200, "batch reactor temperature"),
        _a("reactor_pressure_mpa", "MPa", 1, 0.002, 3, 0, 1.0, "reactor pressure, lags temperature"),
        _a("jacket_cooling_flow_m3h", "m3/h", 1, 0.2, 1, 0, 60, "jacket cooling water flow"),
        _b("reactor_feed_on", "feed valve open or feed pump running"),
        _b("agitator_running"),
        _a("gas_lel_pct_a", "%LEL", 2, 0.5, 1, -10, 100, "LEL detector A (LPG sphere, flange side)"),
        _a("gas_lel_pct_b", "%LEL", 2, 0.5, 1, -10, 100, "LEL detector B, 3 m from A"),
        _a("gas_lel_pct_c", "%LEL", 2, 0.5, 1, -10, 100, "LEL detector C, upwind"),
        _a("gas_nh3_ppm", "ppm", 2, 0.1, 2, -5, 100, "NH3 detector (reactor area)"),
        _a("gas_o2_pct", "%vol", 5, 0.05, 2, 0, 25, "O2 (analyser house)"),
        _b("esd_valve_closed", "inlet emergency shut-off valve closed (position feedback)"),
        _b("spray_cooling_on"),
        _b("sis_bypass_active", "an SIS interlock loop is bypassed"),
    ]}

    def plan(self, start_ms: int, n: int, rng: np.random.Generator) -> HazchemPlan:
        # Tank: receive from a ship/truck at 0.3 %/min to ~70, hold, issue at 0.2 %/min to ~35, hold.
        t = -3600.0
        level = float(rng.uniform(35, 60))
        wps = [(t, level)]
        rising = bool(rng.integers(0, 2))
        while t < n + 3600:
            if rising:
                top = float(rng.uniform(64, 72))
                t += max(top - level, 1.0) / (0.3 / 60)
                level = top
            else:
                bottom = float(rng.uniform(30, 40))
                t += max(level - bottom, 1.0) / (0.2 / 60)
                level = bottom
            wps.append((t, level))
            t += float(rng.uniform(1800, 5400))  # hold between movements
            wps.append((t, level))
            rising = not rising
        # Reactor: feed 60 min, react 30 min, discharge/idle 30 min, with some spread.
        batches = []
        t = float(rng.uniform(-3000, 1200))
        while t < n:
            feed = float(rng.uniform(3000, 4200))
            batches.append((t, t + feed))
            t += feed + 1800 + float(rng.uniform(1200, 2400))
        return HazchemPlan(wps, batches)

    def synthesize(self, site: str, start_ms: int, n: int, plan: HazchemPlan, seed: int) -> Trace:
        rng = rng_for(seed, site, "hazchem-process")
        tr = Trace(site, self.plant, start_ms, n, dict(self.TAGS))
        t = np.arange(n, dtype=np.float64)
        ts, ls = zip(*plan.level_waypoints, strict=True)
        tr.analog["tank_level_pct"] = np.interp(t, ts, ls)
        amb = ambient_c(start_ms, n)
        # A steel sphere lags the air by about an hour; sunshine adds a little in the afternoon.
        tank_t = first_order(amb + 1.5, 3600.0, initial=float(amb[0]) + 1.0)
        tr.analog["tank_temp_c"] = tank_t
        tr.analog["tank_pressure_mpa"] = lpg_pressure_mpa(tank_t)

        feed = _in_intervals(n, plan.batches)
        active = _in_intervals(n, [(a - 300, b + plan.react_after_feed_s) for a, b in plan.batches])
        tr.states["reactor_feed_on"] = _state_from_intervals(n, _merge(plan.batches))
        # merged: one batch's reaction may still run when the next one's agitator starts
        tr.states["agitator_running"] = _state_from_intervals(
            n, _merge([(a - 300, b + plan.react_after_feed_s) for a, b in plan.batches]))
        # 72 degC while reacting, 62 between batches; tau 10 min keeps the slope under 1 degC/min.
        target = 62.0 + 10.0 * active + slow_wander(rng, n, 1.0, 900)
        rt = first_order(target, 600.0, initial=float(target[0]))
        tr.analog["reactor_temp_c"] = rt
        tr.analog["reactor_pressure_mpa"] = reactor_pressure_mpa(rt)
        tr.analog["jacket_cooling_flow_m3h"] = 22.0 + 3.0 * first_order(feed, 60.0) + slow_wander(rng, n, 1.0, 600)
        for d in "abc":
            tr.analog[f"gas_lel_pct_{d}"] = np.full(n, 0.4)
        tr.analog["gas_nh3_ppm"] = 0.6 + slow_wander(rng, n, 0.3, 1800)
        tr.analog["gas_o2_pct"] = np.full(n, 20.9)
        for s in ("esd_valve_closed", "spray_cooling_on", "sis_bypass_active"):
            tr.states[s] = StateSeries(0.0)
        return tr


def lpg_pressure_mpa(temp_c: np.ndarray) -> np.ndarray:
    """Vapour pressure of the LPG sphere (gauge), linearised through 26 degC -> 0.9 and 42 degC -> 1.35 MPa."""
    return np.maximum(0.9 + (temp_c - 26.0) * (0.45 / 16.0), 0.3)


def reactor_pressure_mpa(temp_c: np.ndarray) -> np.ndarray:
    """Reactor pressure from temperature, 30 s behind it (domain: lags temperature by 10–60 s)."""
    p = 0.2 + 0.01 * (temp_c - 60.0)
    return np.clip(first_order(dead_time(p, 30.0), 15.0), 0.05, None)


# =============================================================================================
# 1b. Dust: dry bag filter + Al/Mg wet collector


@dataclass
class DustPlan:
    """Production and fan intervals `(start_s, end_s)` from the shift pattern."""

    production: list[tuple[float, float]]
    fan: list[tuple[float, float]]

    def force_running(self, start_s: float, end_s: float) -> None:
        """Production (and so the fan) runs over `[start_s, end_s)` whatever the shift says."""
        self.production = _merge([*self.production, (start_s, end_s)])
        self.fan = _merge([*self.fan, (start_s - 300, end_s + 600)])

    def force_stopped(self, start_s: float, end_s: float) -> None:
        """Production and fan off over `[start_s, end_s)` (fan stops 10 min after production)."""
        self.production = _cut(self.production, start_s - 600, end_s)
        self.fan = _cut(self.fan, start_s, end_s)


def _merge(iv: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _cut(iv: list[tuple[float, float]], a: float, b: float) -> list[tuple[float, float]]:
    out = []
    for x, y in iv:
        if y <= a or x >= b:
            out.append((x, y))
            continue
        if x < a:
            out.append((x, a))
        if y > b:
            out.append((b, y))
    return out


class DustPlant(PlantModel):
    """A dry bag filter (fan, dP, hopper) and an Al/Mg wet collector, production on two shifts."""

    plant = "dust"
    TAGS: ClassVar[dict[str, TagSpec]] = {t.name: t for t in [
        _b("fan_running"),
        _b("production_running", "dust-producing machines running"),
        _a("collector_dp_pa", "Pa", 2, 10.0, 0, 0, 6000, "bag filter differential pressure"),
        _a("hopper_temp_c", "degC", 5, 0.1, 1, -20, 200, "ash hopper temperature"),
        _a("inlet_duct_temp_c", "degC", 5, 0.1, 1, -20, 200),
        _b("rotary_valve_fault", "rotary lock (ash discharge) fault"),
        _b("hopper_level_high"),
        _a("pulse_air_mpa", "MPa", 10, 0.004, 3, 0, 1.0, "pulse-jet cleaning air pressure"),
        TagSpec("spark_count", "1/s", "count", 0, 0.0, 0, (0, 100), "sparks detected in the last second"),
        _b("spark_extinguish_active"),
        _b("vent_burst", "explosion vent panel burst"),
        _b("isolation_valve_closed"),
        _a("wet_tank_level_pct", "%", 5, 0.3, 1, 0, 100, "wet collector water tank level"),
        _a("wet_water_flow_m3h", "m3/h", 5, 0.1, 1, 0, 30, "wet collector circulating water"),
        _a("h2_lel_pct", "%LEL", 5, 0.3, 1, -10, 100, "H2 in the sludge room"),
    ]}

    def plan(self, start_ms: int, n: int, rng: np.random.Generator) -> DustPlan:
        # Two shifts, 08-16 and 16-24 local; machines stop around the 16:00 hand-over and at midnight.
        hour0 = float(local_hour(start_ms, 1)[0])
        day0_s = -hour0 * 3600.0  # offset of local midnight at or before the start
        prod, fan = [], []
        d = day0_s - 86400
        while d < n + 86400:
            a1 = d + 8 * 3600 + rng.uniform(600, 1200)
            b1 = d + 16 * 3600 - rng.uniform(300, 900)
            a2 = d + 16 * 3600 + rng.uniform(600, 1200)
            b2 = d + 24 * 3600 - rng.uniform(600, 1200)
            prod += [(a1, b1), (a2, b2)]
            # Fan starts first and stops last (domain §1b), and stays on over the short hand-over.
            fan.append((a1 - 300, b2 + 600))
            d += 86400
        return DustPlan(prod, fan)

    def synthesize(self, site: str, start_ms: int, n: int, plan: DustPlan, seed: int) -> Trace:
        rng = rng_for(seed, site, "dust-process")
        tr = Trace(site, self.plant, start_ms, n, dict(self.TAGS))
        fan = _in_intervals(n, plan.fan)
        prod = _in_intervals(n, plan.production)
        tr.states["fan_running"] = _state_from_intervals(n, _merge(plan.fan))
        tr.states["production_running"] = _state_from_intervals(n, _merge(plan.production))
        amb = ambient_c(start_ms, n)
        load = first_order(prod, 600.0)
        t = np.arange(n)
        cleaning = 40.0 * ((t % 600) / 600.0)  # pulse-jet cleaning every 10 min: a small sawtooth
        dp = fan * (950.0 + 250.0 * load + cleaning) + slow_wander(rng, n, 30.0, 1800) * fan
        tr.analog["collector_dp_pa"] = first_order(dp, 15.0)
        tr.analog["hopper_temp_c"] = first_order(amb + 4.0 + 10.0 * prod, 1800.0, initial=float(amb[0]) + 8)
        tr.analog["inlet_duct_temp_c"] = first_order(amb + 1.0 + 4.0 * prod, 600.0, initial=float(amb[0]) + 3)
        tr.analog["pulse_air_mpa"] = 0.6 + slow_wander(rng, n, 0.02, 1200)
        tr.analog["wet_tank_level_pct"] = 66.0 + slow_wander(rng, n, 3.0, 3600)
        tr.analog["wet_water_flow_m3h"] = 11.0 + slow_wander(rng, n, 0.8, 900)
        tr.analog["h2_lel_pct"] = np.full(n, 0.5)
        tr.states["spark_count"] = StateSeries(0.0)
        for s in ("rotary_valve_fault", "hopper_level_high", "spark_extinguish_active", "vent_burst",
                  "isolation_valve_closed"):
            tr.states[s] = StateSeries(0.0)
        return tr


# =============================================================================================
# 1c. Deep-well (vertical DC) aluminium casting


@dataclass
class Drop:
    """One casting drop. Offsets in seconds from the run start."""

    prepare_s: float          # cooling water on, self-check
    cast_start_s: float       # metal flowing, casting_active true
    cast_end_s: float         # casting_active false (end phase is the last 5 min before it)
    speed_sp_mm_min: float
    cooldown_s: float = 600.0  # cooling water stays on after the drop

    @property
    def end_phase_s(self) -> float:
        return self.cast_end_s - 300.0


@dataclass
class CastingPlan:
    drops: list[Drop]
    cw_pressure_sp_mpa: float = 0.25
    cw_flow_sp_m3h: float = 300.0
    launder_sp_mm: float = 100.0
    start_length_mm: float = 400.0  # the start phase covers the first 300–500 mm [S5]

    def cast_elapsed_s(self, length_mm: float, sp: float = 100.0) -> float:
        """Seconds of casting needed to reach `length_mm` (start phase ramps 50 -> 100 % sp)."""
        d_start_s = self.start_length_mm / (0.75 * sp) * 60.0
        if length_mm <= self.start_length_mm:
            # invert the start-phase ramp: length = sp/60 * (0.5 t + 0.25 t^2 / d)
            a, b = 0.25 * sp / 60.0 / d_start_s, 0.5 * sp / 60.0
            return (-b + math.sqrt(b * b + 4 * a * length_mm)) / (2 * a)
        return d_start_s + (length_mm - self.start_length_mm) / sp * 60.0

    def place_drop(self, at_s: float, length_mm: float, *, min_after_s: float = 1800.0) -> Drop:
        """Schedule a drop whose cast length is `length_mm` at offset `at_s`, ending `min_after_s` later.

        Regular drops overlapping it (with 5 min to spare) are removed.
        """
        sp = 100.0
        cast_start = at_s - self.cast_elapsed_s(length_mm, sp)
        drop = Drop(cast_start - 900.0, cast_start, at_s + min_after_s, sp)
        lo, hi = drop.prepare_s - 300.0, drop.cast_end_s + drop.cooldown_s + 300.0
        self.drops = sorted([d for d in self.drops
                             if d.cast_end_s + d.cooldown_s < lo or d.prepare_s > hi] + [drop],
                            key=lambda d: d.prepare_s)
        return drop

    def clear(self, start_s: float, end_s: float) -> None:
        """No drop touches `[start_s, end_s)` (the table is idle)."""
        self.drops = [d for d in self.drops if d.cast_end_s + d.cooldown_s < start_s or d.prepare_s > end_s]


class AluminumCastingPlant(PlantModel):
    """A deep-well DC casting table: 6–12 drops per day of 45–120 min, with phases, cooling water and launder."""

    plant = "aluminum"
    TAGS: ClassVar[dict[str, TagSpec]] = {t.name: t for t in [
        _b("casting_active"),
        _e("casting_phase", 0, 4, "0 idle, 1 prepare, 2 start, 3 steady, 4 end"),
        _e("casting_mode", 0, 2, "0 auto, 1 manual_maint, 2 simulation"),
        _a("cast_length_mm", "mm", 1, 0.5, 0, 0, 10000),
        _a("casting_speed_mm_min", "mm/min", 1, 0.3, 1, 0, 300),
        _a("cw_pressure_mpa", "MPa", 1, 0.002, 3, 0, 1.0, "mould cooling water pressure"),
        _a("cw_flow_m3h", "m3/h", 1, 2.0, 0, 0, 600, "mould cooling water flow"),
        _a("cw_inlet_temp_c", "degC", 10, 0.1, 1, 0, 100),
        _a("pit_outlet_temp_c", "degC", 10, 0.1, 1, 0, 100),
        _a("pit_water_level_m", "m", 10, 0.01, 2, 0, 5),
        _a("launder_level_mm", "mm", 1, 0.8, 0, 0, 250),
        _a("furnace_outlet_level_mm", "mm", 1, 0.8, 0, 0, 250),
        _a("metal_temp_c", "degC", 5, 0.5, 0, 0, 1000),
        _a("emergency_tank_level_pct", "%", 10, 0.2, 1, 0, 100, "high-level emergency water tank"),
        _a("emergency_water_pressure_mpa", "MPa", 1, 0.002, 3, 0, 1.0),
        _b("cutoff_gate_closed", "quick cut-off gate closed"),
        _b("discharge_valve_open", "emergency discharge valve open"),
        _a("furnace_tilt_deg", "deg", 1, 0.05, 1, -5, 45, "tilting furnace angle (0 = upright)"),
        _b("power_ok"),
    ]}

    def plan(self, start_ms: int, n: int, rng: np.random.Generator) -> CastingPlan:
        drops = []
        t = float(rng.uniform(-7200, 600))
        while t < n + 3600:
            # Recipe: 100 mm/min, the set point the aluminum rule pack's speed limits assume. Drops of
            # 45–80 min keep the cast under the 8 m of the pit (domain §1c: 45–120 min, 0–8000 mm).
            cast_s = float(rng.uniform(45, 80)) * 60.0
            prep = t
            d = Drop(prep, prep + 900.0, prep + 900.0 + cast_s, 100.0)
            drops.append(d)
            t = d.cast_end_s + d.cooldown_s + float(rng.uniform(1200, 5400))
        return CastingPlan(drops)

    def synthesize(self, site: str, start_ms: int, n: int, plan: CastingPlan, seed: int) -> Trace:
        rng = rng_for(seed, site, "aluminum-process")
        tr = Trace(site, self.plant, start_ms, n, dict(self.TAGS))
        t = np.arange(n, dtype=np.float64)
        length = np.zeros(n)
        speed = np.zeros(n)
        cooling = np.zeros(n)
        pouring = np.zeros(n)
        tilt = np.zeros(n)
        phase = StateSeries(PHASE_IDLE)
        active = StateSeries(0.0)
        for d in plan.drops:
            if d.cast_end_s + d.cooldown_s < 0 or d.prepare_s >= n:
                continue
            sp = d.speed_sp_mm_min
            # Speed ramps 50 % -> 100 % sp over the start phase, then holds; length integrates it.
            d_start_s = plan.start_length_mm / (0.75 * sp) * 60.0
            m = (t >= d.cast_start_s) & (t < d.cast_end_s)
            el = t[m] - d.cast_start_s
            sp_arr = np.where(el < d_start_s, sp * (0.5 + 0.5 * el / d_start_s), sp)
            speed[m] = sp_arr
            len_arr = np.where(el < d_start_s, (sp * 0.5 * el + sp * 0.25 * el**2 / d_start_s) / 60.0,
                               plan.start_length_mm + (el - d_start_s) * sp / 60.0)
            length[m] = len_arr
            # The cast stays on the table (length holds) until the cool-down ends and the platen resets.
            after = (t >= d.cast_end_s) & (t < d.cast_end_s + d.cooldown_s)
            if m.any():
                length[after] = len_arr[-1]
            cooling[(t >= d.prepare_s) & (t < d.cast_end_s + d.cooldown_s)] = 1.0
            # Metal reaches the launder 2 min before the drop starts and drains after it ends, so the
            # launder level is at set point whenever casting_active is true (the level rules are gated on it).
            pour_start = d.cast_start_s - 120.0
            pm = (t >= pour_start) & (t < d.cast_end_s)
            pouring[pm] = 1.0
            # Tilt: pour at 12 deg rising to 22 deg as the furnace empties; back to 0 after the drop.
            tilt[pm] = 12.0 + 10.0 * (t[pm] - pour_start) / max(d.cast_end_s - pour_start, 1.0)
            steady_at = d.cast_start_s + d_start_s
            end_at = max(d.end_phase_s, steady_at)  # a short drop goes from start straight to end
            # Edge times may be negative (a drop under way when the run starts): the state series folds
            # everything at or before 0 into the initial value, keeping the latest.
            for at, ph in ((d.prepare_s, PHASE_PREPARE), (d.cast_start_s, PHASE_START), (steady_at, PHASE_STEADY),
                           (end_at, PHASE_END), (d.cast_end_s, PHASE_IDLE)):
                phase.set(int(at * 1000), ph)
            active.set(int(d.cast_start_s * 1000), 1.0)
            active.set(int(d.cast_end_s * 1000), 0.0)
        tr.states["casting_active"] = active
        tr.states["casting_phase"] = phase
        tr.states["casting_mode"] = StateSeries(MODE_AUTO)
        tr.analog["cast_length_mm"] = length
        tr.analog["casting_speed_mm_min"] = speed
        # Pumps start within ~20 s; a little hydraulic wander while running.
        cool = first_order(cooling, 8.0)
        # Wander kept small and slow: the pack's trend rule on cw_flow (10 min window, 30 min horizon)
        # must not mistake hydraulic wander for a clogging strainer.
        tr.analog["cw_pressure_mpa"] = cool * (plan.cw_pressure_sp_mpa + slow_wander(rng, n, 0.003, 900))
        tr.analog["cw_flow_m3h"] = cool * (plan.cw_flow_sp_m3h + slow_wander(rng, n, 3.0, 900))
        amb = ambient_c(start_ms, n)
        inlet = first_order(24.0 + 0.5 * (amb - 24.0), 1800.0)
        tr.analog["cw_inlet_temp_c"] = inlet
        tr.analog["pit_outlet_temp_c"] = first_order(inlet + 2.0 + 10.0 * pouring, 300.0, initial=float(inlet[0]) + 3)
        tr.analog["pit_water_level_m"] = first_order(1.2 + 0.4 * cooling, 900.0, initial=1.3)
        # Launder and furnace outlet fill in ~30 s when metal flows and drain in ~60 s at the end.
        lvl = first_order(pouring * plan.launder_sp_mm, 15.0)
        tr.analog["launder_level_mm"] = lvl + pouring * slow_wander(rng, n, 2.0, 120)
        tr.analog["furnace_outlet_level_mm"] = lvl + pouring * slow_wander(rng, n, 2.0, 150)
        tr.analog["metal_temp_c"] = 708.0 + slow_wander(rng, n, 5.0, 1800)
        tr.analog["emergency_tank_level_pct"] = 95.0 + slow_wander(rng, n, 1.5, 3600)
        tr.analog["emergency_water_pressure_mpa"] = 0.12 + slow_wander(rng, n, 0.003, 1800)
        tr.analog["furnace_tilt_deg"] = first_order(tilt, 10.0)
        tr.states["cutoff_gate_closed"] = StateSeries(0.0)
        tr.states["discharge_valve_open"] = StateSeries(0.0)
        tr.states["power_ok"] = StateSeries(1.0)
        return tr


# =============================================================================================
# 1d. Steel gas areas (CO), optional


@dataclass
class SteelPlan:
    holder_waypoints: list[tuple[float, float]] = field(default_factory=list)


class SteelCOPlant(PlantModel):
    """A blast-furnace-gas area: three CO detectors, gas main pressure, gas holder, O2 in gas."""

    plant = "steel"
    TAGS: ClassVar[dict[str, TagSpec]] = {t.name: t for t in [
        _a("co_ppm_a", "ppm", 2, 0.5, 1, -10, 1000),
        _a("co_ppm_b", "ppm", 2, 0.5, 1, -10, 1000),
        _a("co_ppm_c", "ppm", 2, 0.5, 1, -10, 1000),
        _a("gas_main_pressure_kpa", "kPa", 1, 0.05, 2, 0, 20),
        _a("gas_holder_level_pct", "%", 10, 0.3, 1, 0, 100),
        _a("o2_in_gas_pct", "%vol", 10, 0.02, 2, 0, 21),
        _b("burner_valve_closed", "burner shut-off valves closed"),
    ]}

    def plan(self, start_ms: int, n: int, rng: np.random.Generator) -> SteelPlan:
        return SteelPlan([(float(t), float(rng.uniform(35, 65))) for t in range(-3600, n + 7200, 3600)])

    def synthesize(self, site: str, start_ms: int, n: int, plan: SteelPlan, seed: int) -> Trace:
        rng = rng_for(seed, site, "steel-process")
        tr = Trace(site, self.plant, start_ms, n, dict(self.TAGS))
        t = np.arange(n, dtype=np.float64)
        for d, base in zip("abc", (3.0, 4.0, 2.5), strict=True):
            tr.analog[f"co_ppm_{d}"] = base + slow_wander(rng, n, 1.5, 600)
        tr.analog["gas_main_pressure_kpa"] = 9.0 + slow_wander(rng, n, 1.0, 300)
        ts, ls = zip(*plan.holder_waypoints, strict=True)
        tr.analog["gas_holder_level_pct"] = np.interp(t, ts, ls)
        tr.analog["o2_in_gas_pct"] = 0.3 + slow_wander(rng, n, 0.05, 1200)
        tr.states["burner_valve_closed"] = StateSeries(0.0)
        return tr


PLANTS: dict[str, PlantModel] = {
    "hazchem": HazchemPlant(),
    "dust": DustPlant(),
    "aluminum": AluminumCastingPlant(),
    "steel": SteelCOPlant(),
}


def build_trace(plant: str, site: str, start_ms: int, duration_s: int, seed: int,
                arrange: list | None = None) -> tuple[Trace, object]:
    """Plan and synthesise one site's normal operation; `arrange` callables may edit the plan first."""
    model = PLANTS[plant]
    n = int(duration_s)
    plan = model.plan(start_ms, n, rng_for(seed, site, plant, "plan"))
    for fn in arrange or []:
        fn(plan)
    return model.synthesize(site, start_ms, n, plan, seed), plan
