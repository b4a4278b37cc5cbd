"""Brax/MJX tasks (filled in by the brax adapter work)."""
