"""`python -m citadel_proxy` is the `citadel-proxy` command."""

import sys

from citadel_proxy.cli import main

sys.exit(main())
