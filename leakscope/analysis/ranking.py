"""Allocation sites rated, ranked and tied to the holder whose items they made."""

from __future__ import annotations

from leakscope.analysis.stats import ratchet, suffix_minima, theil_sen, thin
from leakscope.model.runfile import Holder, Run, Site, Verdict

SITE_LIMIT = 25


def rank_sites(sites: list[Site], leak: bool) -> list[Site]:
    """Rate and rank allocation sites; keep the ones that grow, most growth first."""
    ranked = []
    for site in sites:
        series = site.series
        if len(series) >= 2:
            floor = suffix_minima(series)
            site.bytes_per_iteration = round(theil_sen(floor), 1)
            quarter = max(1, len(floor) // 4)
            still_rising = floor[-1] > floor[-quarter - 1] if len(floor) > quarter else False
            site.growing = leak and not site.filling and site.bytes_per_iteration > 0 and (
                still_rising or ratchet(series).leak
            )
        site.series = [int(v) for v in thin(series)]
        ranked.append(site)
    ranked.sort(key=lambda s: (s.growing, s.bytes_per_iteration, s.kept_bytes), reverse=True)
    return [s for s in ranked[:SITE_LIMIT] if s.kept_bytes > 0 or s.bytes_per_iteration > 0]


# A steady native site kept blocks in at least this share of the window's loops.
STEADY_SHARE = 0.5


def steady(site: Site, loops: int) -> bool:
    """A native site that kept blocks in at least half the window's loops."""
    return site.kept_blocks >= max(2, STEADY_SHARE * loops)


def mark_native_sites(run: Run, verdict: Verdict, native: list[Site]) -> None:
    """memray's native sites: kept if steady over the window, growing only under a native leak.

    memray's "leaked" means "not freed when its window closed": one buffer
    an extension caches, or a pool it grew once, is no leak. A site must have
    kept blocks in at least half the window's loops (``steady``),
    and the verdict, decided on the counters, must call the growth native.
    """
    loops = int((run.observations.get("locator") or {}).get("loops") or 0)
    if not native:
        return
    kept = [site for site in native if loops >= 1 and steady(site, loops)]
    for site in kept:
        site.growing = verdict.leak and verdict.kind == "native"
    # Under a native leak its native sites come first (they are the culprit),
    # else after tracemalloc's.
    kept.sort(key=lambda s: s.kept_bytes, reverse=True)
    kept = kept[:SITE_LIMIT]
    run.sites = kept + run.sites if verdict.kind == "native" else run.sites + kept


def link_sites(sites: list[Site], holders: list[Holder]) -> None:
    """Point each site at the holder whose items it made or whose storage it grew."""
    for holder in holders:
        lines = set(holder.items_made_at) | ({holder.grown_at} if holder.grown_at else set())
        for site in sites:
            user = site.user_frame
            here = {f"{site.file}:{site.line}"} | ({f"{user.file}:{user.line}"} if user else set())
            if site.holder is None and here & lines:
                site.holder = holder.path
