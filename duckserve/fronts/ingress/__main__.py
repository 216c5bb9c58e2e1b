"""``python -m duckserve.fronts.ingress``: see `duckserve.fronts.ingress`."""

import sys

from duckserve.fronts.ingress import main

sys.exit(main())
