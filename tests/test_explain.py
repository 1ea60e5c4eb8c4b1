import numpy as np

from fer_core.explain import explain_face, grad_cam, last_conv_layer, overlay
from fer_core.preprocess import Preprocessing


def test_grad_cam_map_for_every_architecture_style(model_store, astronaut_bgr):
    for name in ("default", "tiny"):
        model = model_store.load(name).model
        assert last_conv_layer(model) is not None
        face = np.random.default_rng(0).random((48, 48, 1)).astype(np.float32)
        heat, explained = grad_cam(model, face)
        assert heat.shape == (48, 48)
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        assert explained == int(np.argmax(model.predict(face[None], verbose=0)))
        heat_sad, explained_sad = grad_cam(model, face, 4)
        assert explained_sad == 4


def test_overlay_and_explain_face(model_store, astronaut_bgr):
    model = model_store.load("default").model
    picture = explain_face(model, astronaut_bgr, (180, 60, 90, 110), Preprocessing(), "happy")
    assert picture.shape == (192, 192, 3) and picture.dtype == np.uint8
    assert overlay(np.zeros((48, 48, 1), np.float32), np.ones((48, 48), np.float32), size=96).shape == (96, 96, 3)
