"""Dashboards for communes and the syndicate: fleet health and live sessions.

An aiohttp application built by :func:`dashboards.app.create_app` from a running
controller; it reads, it never writes, and it never shows a device identifier.
"""

from dashboards.app import create_app

__all__ = ["create_app"]
