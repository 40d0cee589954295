"""Training and evaluation code that is not part of the installed ``imagegate`` package.

Run its modules from the repository root, e.g. ``python -m training.mini.train``.
"""
