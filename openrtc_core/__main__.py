"""``python -m openrtc_core``: the same as the ``openrtc`` command."""

import sys

from .cli import main

sys.exit(main())
