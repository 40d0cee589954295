"""Tests of imagegate-mini and its training code (a package, so that its conftest is
``mini.conftest`` and does not shadow tests/conftest.py, which other tests import as
``conftest``)."""
