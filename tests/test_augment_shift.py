"""``augment: shift`` means the same thing in both pipelines: a uniform random whole-pixel translation of the val
transform's image by up to ``augment_shift`` pixels per axis, zero fill, and no shift outside training."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from ms_transfer.core.config import ConfigError, TrainConfig
from ms_transfer.core.data import DatasetError, Preprocess, check_augment

SIZE, SHIFT, DRAWS = 6, 1, 450
PRE = Preprocess(SIZE, channels=1, normalize="none", resize="exact")


def _translate(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``image`` (HxW) moved right by ``dx`` and down by ``dy`` pixels, vacated pixels 0."""
    out = np.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = image[max(-dy, 0):h - max(dy, 0),
                                                                      max(-dx, 0):w - max(dx, 0)]
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """One 6x6 grayscale PNG whose pixels are all distinct and non-zero (every shift gives a different image), as
    ``DRAWS`` samples."""
    path = tmp_path_factory.mktemp("shift") / "digit.png"
    Image.fromarray(np.arange(1, SIZE * SIZE + 1, dtype=np.uint8).reshape(SIZE, SIZE) * 7, mode="L").save(path)
    return [(str(path), 0)] * DRAWS


def _mindspore_images(samples, train: bool) -> np.ndarray:
    from ms_transfer.mindspore_backend.data import build_dataset
    dataset, _ = build_dataset(samples, PRE, 50, train=train, shuffle=False, seed=3, num_workers=1,
                               augment="shift", augment_shift=SHIFT)
    return np.concatenate([images.asnumpy() for images, _ in dataset.create_tuple_iterator(num_epochs=1)])[:, 0]


def _torch_images(samples, train: bool) -> np.ndarray:
    from torch_reference.data import build_loader
    loader, _ = build_loader(samples, PRE, 50, train=train, shuffle=False, seed=3, augment="shift",
                             augment_shift=SHIFT)
    return np.concatenate([images.numpy() for images, _ in loader])[:, 0]


@pytest.mark.parametrize("images_of", [_mindspore_images, _torch_images], ids=["mindspore", "torch"])
def test_shift_draws_every_translation_uniformly_in_training_and_none_in_eval(samples, images_of):
    evaluated = images_of(samples, train=False)
    assert all(np.array_equal(image, evaluated[0]) for image in evaluated), "augment=shift must not shift in eval"
    shifts = {(dx, dy): _translate(evaluated[0], dx, dy).tobytes()
              for dx in range(-SHIFT, SHIFT + 1) for dy in range(-SHIFT, SHIFT + 1)}
    by_image = {image: shift for shift, image in shifts.items()}
    trained = images_of(samples, train=True)
    drawn = Counter(by_image.get(image.tobytes(), "not a translation") for image in trained)
    assert set(drawn) == set(shifts), drawn   # exactly the (2N+1)^2 whole-pixel translations, zero-filled
    # Uniform: each of the 9 shifts is Binomial(450, 1/9), mean 50, std 6.7; [20, 80] is 4.5 std either side
    # (a uniform draw falls outside with probability < 1e-4 per shift), while a shift drawn at half or twice its
    # rate (25 or 100 expected) or a missing one fails.
    assert all(20 <= n <= 80 for n in drawn.values()), drawn


def test_shift_needs_a_whole_number_of_pixels():
    assert check_augment("shift", 2) == "shift"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(DatasetError, match="augment_shift"):
            check_augment("shift", bad)
    with pytest.raises(ConfigError, match="augment_shift must be a whole number"):
        TrainConfig(augment="shift", augment_shift=0).validate()
