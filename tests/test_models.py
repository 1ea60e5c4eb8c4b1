import pytest

from fer_core.base.errors import SettingError
from fer_core.training.networks import ARCHITECTURES, build_augmentation, build_model, describe, with_augmentation

# Parameter ranges around the size each builder's docstring gives.
EXPECTED_PARAMETERS = {
    "mini_xception": (50_000, 70_000),
    "ds_cnn": (50_000, 70_000),
    "simple_cnn": (500_000, 3_000_000),
    "alexnet_small": (4_000_000, 6_000_000),
    "modified_cnn": (1_000_000, 3_000_000),
    "fer_vgg": (1_000_000, 1_250_000),
    "fer_vgg_wide": (2_500_000, 2_900_000),
    "fer_resnet": (1_000_000, 1_400_000),
}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_builder_gives_seven_softmax_outputs_and_plausible_size(arch):
    model = build_model(arch)
    assert model.output_shape == (None, 7)
    low, high = EXPECTED_PARAMETERS[arch]
    assert low <= model.count_params() <= high
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"
    assert describe(arch)


def test_every_architecture_has_an_expected_size():
    assert set(ARCHITECTURES) == set(EXPECTED_PARAMETERS)


def test_unknown_architecture():
    for look_up in (build_model, describe):
        with pytest.raises(SettingError, match="unknown architecture 'resnet1000'; choose one of alexnet_small, "):
            look_up("resnet1000")


def test_augmentation_is_identity_at_inference_and_random_in_training():
    import numpy as np

    model = build_model("mini_xception")
    trainer = with_augmentation(model, build_augmentation(seed=1))
    faces = np.random.default_rng(0).random((4, 48, 48, 1)).astype("float32")
    np.testing.assert_allclose(trainer(faces, training=False), model(faces, training=False), atol=1e-5)
    augmented = trainer.get_layer("augmentation")(faces, training=True)
    assert augmented.shape == faces.shape
    assert not np.allclose(np.asarray(augmented), faces)


def test_augmentation_keeps_the_input_range():
    import numpy as np

    faces = np.random.default_rng(0).random((64, 48, 48, 1)).astype("float32")
    augmented = np.asarray(build_augmentation(seed=2)(faces, training=True))
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
