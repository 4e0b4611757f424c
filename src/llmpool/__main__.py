"""``python -m llmpool``: the ``llmpool`` command."""

import sys

from llmpool.cli.main import main

sys.exit(main())
