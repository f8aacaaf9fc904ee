"""``python -m service.cli``: the ``sleuth`` command."""

import sys

from service.cli.main import main

sys.exit(main())
