"""Small shared utilities (timing, machine description)."""
