"""``python -m medallion_cli``: the same as the ``medallion`` command."""

from medallion_cli.cli.app import entry

if __name__ == "__main__":
    entry()
