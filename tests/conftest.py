import os

import pytest
from hypothesis import HealthCheck, settings

from rewrite import saturate

# One profile for the whole suite; CI runs it derandomised so a run is repeatable.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite the expected outputs of golden tests (review the diff)")


@pytest.fixture
def worker(monkeypatch):
    """A fresh saturation worker (``rewrite.saturate``), stopped afterwards; tests may replace
    its command."""
    w = saturate.Worker()
    monkeypatch.setattr(saturate, "_WORKER", w)
    yield w
    w.stop()


@pytest.fixture
def caches(monkeypatch):
    """``caches(l1, l2)``: plan with an L1 data cache of ``l1`` bytes and an L2 of ``l2`` a
    core for the rest of the test, whatever this host has. Cache blocking and the cost of
    reading a matrix again are sized by the host's caches (``extract.l1_data_bytes``,
    ``extract.l2_bytes``), and so is a padding stage's price (``cost.l2_bytes``), so a
    program a test spells out holds for the caches it names."""
    from rewrite import cost, extract

    def pin(l1: int, l2: int) -> None:
        monkeypatch.setattr(extract, "l1_data_bytes", lambda: l1)
        monkeypatch.setattr(extract, "l2_bytes", lambda: l2)
        monkeypatch.setattr(cost, "l2_bytes", lambda: l2)

    return pin


@pytest.fixture
def zen4_caches(caches):
    """The caches of the Zen 4 host (32 KB L1d, 1 MB L2 a core) that the programs a test
    spells out were planned for: on a host with others the same library plans other blocks."""
    caches(32 * 1024, 1024 * 1024)
