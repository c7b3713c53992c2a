"""``python -m attnviz ...`` (and ``torchrun -m attnviz stats ...``): the ``attnviz`` command."""

import sys

from .cli import main

sys.exit(main())
