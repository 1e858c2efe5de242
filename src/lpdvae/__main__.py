import sys

from lpdvae.cli import main

sys.exit(main())
