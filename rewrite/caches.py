"""This CPU's data caches per core, as Linux describes them in sysfs: the search sizes its
blocks by them (``extract.blocked_loops``), the backend orders a part that one thread runs
whole by them (``lower.one_sweep``)."""

from __future__ import annotations

import functools
from pathlib import Path

# Where sysfs says nothing (another OS, a container without it): Zen 3's caches, the
# smallest of the x86 hosts this was measured on.
DEFAULT_L1_BYTES = 32 * 1024
DEFAULT_L2_BYTES = 512 * 1024


@functools.lru_cache(maxsize=None)
def l1_data_bytes() -> int:
    """The L1 data cache per core (sysfs's ``48K``), else ``DEFAULT_L1_BYTES``."""
    return _cache_bytes(1, "Data") or DEFAULT_L1_BYTES


@functools.lru_cache(maxsize=None)
def l2_bytes() -> int:
    """The L2 cache per core (sysfs's ``2048K``), else ``DEFAULT_L2_BYTES``."""
    return _cache_bytes(2, "Unified") or DEFAULT_L2_BYTES


def _cache_bytes(level: int, kind: str) -> int:
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            lv, ty = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if lv == str(level) and ty == kind and size[:-1].isdigit() and size[-1] in "KM":
            return int(size[:-1]) << (10 if size[-1] == "K" else 20)
    return 0
