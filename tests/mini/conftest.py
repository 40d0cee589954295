"""The training and evaluation code lives in training/mini/ at the repository root, outside
the installed package: put the root on sys.path so these tests import it as `training.mini`."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
