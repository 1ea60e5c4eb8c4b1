"""The ground floor: error types, the seven labels, an object pool and atomic file writes. Imports
nothing of fer_core.
"""
