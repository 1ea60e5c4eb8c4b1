"""Stored models: the typed model card and the model store (Keras files, LiteRT files, cards).
"""
