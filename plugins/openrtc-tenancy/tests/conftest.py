"""The real-Redis fixtures (redis_url, redis_client) for the tenancy tests; see redis_server.py."""

from __future__ import annotations

from redis_server import private_redis, redis_client, redis_url

__all__ = ["private_redis", "redis_client", "redis_url"]
