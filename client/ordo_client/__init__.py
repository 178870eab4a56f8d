"""Ordo client."""
