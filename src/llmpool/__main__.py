"""``python -m llmpool``: the ``llmpool`` command."""

import sys

from llmpool.cli.main import run

if __name__ == "__main__":
    sys.exit(run())
