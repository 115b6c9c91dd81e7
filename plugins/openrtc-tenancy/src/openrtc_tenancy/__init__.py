"""openrtc-tenancy: many customers on one pool, each with its own keys, caps and breaker.

Installed, it reads the pool's tenants file (``AgentPool(tenants=...)``, ``--tenants``,
``OPENRTC_TENANTS``); without one it does nothing. See docs/tenancy.md.
"""

from __future__ import annotations

from .signing import sign, verify

__all__ = ["sign", "verify"]
