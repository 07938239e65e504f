"""The identity service (DESIGN §4)."""
