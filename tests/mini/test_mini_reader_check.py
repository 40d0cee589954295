"""The reader-alone measure (training/mini/reader_check.py): the model's own sentences are read as the
scene they describe, and the blind held-out split stays out of it unless asked for."""

from __future__ import annotations

import subprocess
import sys

from training.mini.reader_check import BLIND, run


def test_the_models_own_sentences_are_read_right_and_the_blind_split_is_left_out():
    table = run(60, 0, None)
    assert not any(key.split("/")[0] in BLIND for key in table)
    one = table["ingrammar/1"]
    assert one["wrong"] == 0 and one["right"] >= 55  # a stated thing on a backdrop: read as said
    assert all(sum(t.values()) == 60 for t in table.values())


def test_the_blind_split_cannot_be_shown():
    out = subprocess.run([sys.executable, "-m", "training.mini.reader_check", "--n", "1", "--show", "heldout3"],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr
