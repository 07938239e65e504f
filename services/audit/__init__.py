"""The audit service (DESIGN §4)."""
