"""Faces in images: decoding images, the face detectors, the crop and preprocessing every model is fed,
sample frames.
"""
