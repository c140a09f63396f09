"""The two data sets of the walkthrough, split the same way every time (no download needed).

``digits`` is scikit-learn's bundled 8x8 digits data, split as in its documentation example
(first half to train, second half to test). ``mushrooms`` stands in for the UCI mushroom data
of XGBoost's Getting Started guide, which the seed downloads: it is *generated* here, with the
same layout (22 categorical attributes one-hot encoded into 126 columns, 6513 training and 1611
test rows) and a label that, as in the real data, is decided mostly by the odour.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Split = tuple[Any, Any, Any, Any]

#: Categories per attribute of the UCI mushroom data, in its column order (126 in all).
MUSHROOM_ATTRIBUTES = {
    "cap-shape": 6,
    "cap-surface": 4,
    "cap-color": 10,
    "bruises": 2,
    "odor": 9,
    "gill-attachment": 4,
    "gill-spacing": 3,
    "gill-size": 2,
    "gill-color": 12,
    "stalk-shape": 2,
    "stalk-root": 7,
    "stalk-surface-above-ring": 4,
    "stalk-surface-below-ring": 4,
    "stalk-color-above-ring": 9,
    "stalk-color-below-ring": 9,
    "veil-type": 2,
    "veil-color": 4,
    "ring-number": 3,
    "ring-type": 8,
    "spore-print-color": 9,
    "population": 6,
    "habitat": 7,
}
_ATTRIBUTES = list(MUSHROOM_ATTRIBUTES.items())
# Odours of edible mushrooms (almond, anise, none); a green spore print is poisonous anyway.
_HARMLESS_ODORS = [0, 1, 5]
_NO_ODOR, _GREEN_SPORES = 5, 7
_TRAIN_ROWS, _TEST_ROWS = 6513, 1611


def digits() -> Split:
    """``X_train, X_test, y_train, y_test`` of the digits, as the scikit-learn example splits it."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    data = datasets.load_digits()
    images = data.images.reshape((len(data.images), -1))
    split: Split = tuple(train_test_split(images, data.target, test_size=0.5, shuffle=False))
    return split


def mushrooms(seed: int = 2024) -> Split:
    """``X_train, X_test, y_train, y_test`` of generated mushrooms (1.0 = poisonous)."""
    rng = np.random.default_rng(seed)
    rows = _TRAIN_ROWS + _TEST_ROWS
    codes = {name: rng.integers(0, count, rows) for name, count in _ATTRIBUTES}
    odor, spores = codes["odor"], codes["spore-print-color"]
    poisonous = ~np.isin(odor, _HARMLESS_ODORS) | ((odor == _NO_ODOR) & (spores == _GREEN_SPORES))
    one_hot = [np.eye(count, dtype=np.float32)[codes[name]] for name, count in _ATTRIBUTES]
    features = np.concatenate(one_hot, axis=1)
    labels = poisonous.astype(np.float32)
    return (
        features[:_TRAIN_ROWS],
        features[_TRAIN_ROWS:],
        labels[:_TRAIN_ROWS],
        labels[_TRAIN_ROWS:],
    )
