"""``python -m cli``: the ``swiftchain`` command line."""

from cli.main import main

main()
