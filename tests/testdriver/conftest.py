"""Tier 2: the real libvirt API through libvirt's in-process test driver.

The test driver keeps its objects only while a connection is open, so the
`session` fixture's connection spans the test; CLI invocations inside the test
open their own connections to the same in-memory host.
"""
