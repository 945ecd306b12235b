"""Hydro Serving's benchmark suite (issue 7): ``python -m bench [--quick] [--cases ...]``.

Every figure is printed next to its ratio to a baseline measured in the same run, because the
machines this runs on are shared and noisy: absolute numbers move, ratios mostly do not.
"""
