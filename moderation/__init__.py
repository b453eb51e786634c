"""Safeguards: prompt and image gates, provenance, audit log and limits. No Discord objects here."""
