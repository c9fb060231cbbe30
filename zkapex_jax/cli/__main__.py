"""``python -m zkapex_jax.cli`` = ``zkapex``."""

import sys

from . import main

sys.exit(main())
