"""``python -m services.audit``: run the audit service."""

from services.audit.main import main

main()
