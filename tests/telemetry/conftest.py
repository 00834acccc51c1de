"""The SLO tests' clock and control planes (tests/delivery/test_slo.py), shared, not copied."""

from tests.delivery.test_slo import any_plane, clock, plane  # noqa: F401
