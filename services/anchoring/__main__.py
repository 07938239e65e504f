"""``python -m services.anchoring``: run the anchoring service."""

from services.anchoring.main import main

main()
