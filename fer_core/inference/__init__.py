"""Running a stored model: the classifier and analyser, live tracking, the server's stream shares,
explanation maps, timings.

Serving (predict, live, streams, bench) never imports Keras nor TensorFlow when the model has a
LiteRT file.
"""
