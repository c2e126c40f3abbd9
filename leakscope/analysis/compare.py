"""What grows in NEW but not in BASE: growing sites and holders matched across two runs.

Pure functions on Run objects: ``diff`` loads the files, ``compare`` decides
what is new, a renderer prints it. Only what *grows* is compared, because a
site that keeps a few kilobytes in both runs is the same worker doing the
same thing; the question a reviewer asks is "did this change add a leak?".
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from leakscope.model.runfile import Holder, Run, Site


@dataclass
class Comparison:
    """The differences ``leakscope diff`` reports, BASE to NEW."""

    base: Run
    new: Run
    new_sites: list[Site] = field(default_factory=list)  # grow in NEW, not in BASE
    new_holders: list[Holder] = field(default_factory=list)
    gone_sites: list[Site] = field(default_factory=list)  # grew in BASE, not in NEW
    gone_holders: list[Holder] = field(default_factory=list)
    # Sites that grow in both, (BASE, NEW), to show how their rate moved.
    common_sites: list[tuple[Site, Site]] = field(default_factory=list)

    @property
    def base_rate(self) -> float:
        return self.base.verdict.bytes_per_iteration if self.base.verdict else 0.0

    @property
    def new_rate(self) -> float:
        return self.new.verdict.bytes_per_iteration if self.new.verdict else 0.0

    @property
    def rate_change(self) -> float:
        return round(self.new_rate - self.base_rate, 1)

    @property
    def newly_leaking(self) -> bool:
        """NEW leaks and BASE did not: new even when no Python site names it (native)."""
        base_leak = bool(self.base.verdict and self.base.verdict.leak)
        return bool(self.new.verdict and self.new.verdict.leak) and not base_leak

    @property
    def has_new(self) -> bool:
        """What ``--fail-on-new`` fails on."""
        return bool(self.new_sites or self.new_holders or self.newly_leaking)


def _exact_key(site: Site) -> Hashable:
    frame = site.user_frame
    return (site.file, site.line, frame.file if frame else None, frame.line if frame else None)


def _loose_key(site: Site) -> Hashable:
    """The same code even when lines moved: an edit between BASE and NEW shifts line numbers."""
    frame = site.user_frame
    return (site.file, site.function, frame.file if frame else None,
            frame.function if frame else None)


def match_sites(
    base: list[Site], new: list[Site]
) -> tuple[list[tuple[Site, Site]], list[Site], list[Site]]:
    """Pair sites one to one: same line first, then same function; return (pairs, new, gone).

    Two passes, so that a function whose one leaking line moved still
    matches, while a second leaking line added to the same function does
    not hide behind the first.
    """
    pairs: list[tuple[Site, Site]] = []
    left_base = list(base)
    unmatched: list[Site] = []
    for key in (_exact_key, _loose_key):
        unmatched = []
        for site in new:
            if any(site is n for _, n in pairs):
                continue
            partner = next((b for b in left_base if key(b) == key(site)), None)
            if partner is None:
                unmatched.append(site)
            else:
                left_base.remove(partner)
                pairs.append((partner, site))
    return pairs, unmatched, left_base


def compare(base: Run, new: Run) -> Comparison:
    """The growing sites and holders of NEW that BASE did not have, and the reverse."""
    base_sites = [s for s in base.sites if s.growing]
    new_sites = [s for s in new.sites if s.growing]
    pairs, added, gone = match_sites(base_sites, new_sites)
    base_holders = {h.path: h for h in base.holders if h.growing}
    new_holders = {h.path: h for h in new.holders if h.growing}
    return Comparison(
        base=base, new=new,
        new_sites=added, gone_sites=gone,
        new_holders=[h for path, h in new_holders.items() if path not in base_holders],
        gone_holders=[h for path, h in base_holders.items() if path not in new_holders],
        common_sites=pairs,
    )
