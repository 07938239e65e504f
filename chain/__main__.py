"""``python -m chain``: run a chain node (the same as ``python -m chain.node``)."""

from chain.node.main import main

main()
