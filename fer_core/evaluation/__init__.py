"""Scoring a classifier on labelled faces: reports, per-face evaluations with openable cells, folds,
the HTML report.
"""
