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
