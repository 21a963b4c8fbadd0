"""flyapi: a typed client for the Fly Machines REST API, over httpx.

Nothing of Django or of cloudctl in here (only httpx and the standard library): whoever builds a `FlyClient`
passes in what it needs (base URL, token, rate limiter, clock). `tests/test_fly_client.py` checks that importing
it loads no Django.
"""

from .client import DEFAULT_BASE_URL, FlyClient
from .errors import FlyAPIError
from .models import (
    App, Certificate, CertificateSummary, CertificateValidationError, DNSRecord, IPAssignment, Lease, Machine, Volume,
    WaitResult,
)
from .ratelimit import DEFAULT_RATE, FLY_RATES, Rate, RateLimiter

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_RATE", "FLY_RATES", "App", "Certificate", "CertificateSummary",
           "CertificateValidationError", "DNSRecord", "FlyAPIError", "FlyClient", "IPAssignment", "Lease", "Machine",
           "Rate", "RateLimiter", "Volume", "WaitResult"]
