"""Shared pytest configuration for the flowproto test suite.

pytest-trio runs in trio mode (see ``setup.cfg``), so ``async def`` tests run
under Trio without a marker.
"""
