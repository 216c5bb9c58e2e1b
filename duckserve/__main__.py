import sys

from duckserve.sql.cli import main

sys.exit(main())
