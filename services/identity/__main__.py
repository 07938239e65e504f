"""``python -m services.identity``: run the identity service."""

from services.identity.main import main

main()
