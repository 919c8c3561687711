"""Servers speaking Google's APIs on loopback, for the real client libraries to talk to."""
