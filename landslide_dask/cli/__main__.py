"""``python -m landslide_dask.cli``: the same as the ``landslide-dask`` command."""

import sys

from . import main

sys.exit(main())
