"""Fixtures: one live server per test module (real uvicorn on loopback), clients online."""

from tests.server.live import live, online  # noqa: F401  (pytest fixtures)
