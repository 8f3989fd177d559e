"""``python -m cbp …``: the same command line as ``cbp …``."""
import sys

from .cli import main

sys.exit(main())
