"""`python -m taichi_nerf.cli ...`: the same as the `taichi-nerf` console script."""
import sys

from taichi_nerf.cli.commands import main

sys.exit(main())
