"""``python -m llmpool``: the ``llmpool`` command."""

import sys

from llmpool.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
