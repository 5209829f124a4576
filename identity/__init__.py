"""Globus-Connect-Server-compatible identity mapping and the local account policy."""
