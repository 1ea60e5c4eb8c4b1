"""Labelled faces: the FER2013 CSV, class folders and zips, splits and folds, a class's recorded faces.
"""
