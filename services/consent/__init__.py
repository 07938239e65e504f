"""The consent service (DESIGN §4)."""
