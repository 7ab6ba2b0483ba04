import sys

from jaxblend.cli import main

sys.exit(main())
