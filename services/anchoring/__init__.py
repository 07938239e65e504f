"""The anchoring service (DESIGN §4)."""
