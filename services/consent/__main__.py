"""``python -m services.consent``: run the consent service."""

from services.consent.main import main

main()
