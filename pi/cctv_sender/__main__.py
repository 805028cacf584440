"""``python -m cctv_sender``: same as the ``cctv-sender`` command."""

import sys

from cctv_sender.cli import main

sys.exit(main())
