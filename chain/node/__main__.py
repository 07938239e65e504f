"""``python -m chain.node``: run a chain node."""

from chain.node.main import main

main()
