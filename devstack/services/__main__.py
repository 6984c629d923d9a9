"""python -m devstack.services up|down|status [names...]"""
import sys

from .control import main

sys.exit(main())
