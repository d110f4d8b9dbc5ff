"""
=====================================
Decoder atoms learned for different k
=====================================

A K-sparse autoencoder rebuilds each sample from only ``k`` of its
``n_components`` decoder atoms (the rows of ``components_``). The value of
``k`` decides what those atoms become. With a very small ``k`` one or two atoms
must carry a whole digit, so each atom turns into a template of a typical
digit. With a larger ``k`` many atoms share the work, and each one learns a
smaller part, such as a stroke or a corner.

This example trains one model per ``k`` on the 8x8 images of scikit-learn's
digits, draws the atoms of the sparsest and the densest model, and then
measures how much each atom still looks like a whole digit.
"""

# %%
# Train one model per value of k
# ------------------------------
#
# Pixel values are scaled to [0, 1]. Every model has 64 units and the same
# seed, so they differ only in ``k``. A short training run (50 epochs) is
# enough to see the effect; it stops before the loss has fully converged,
# hence the warning filter.
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from sklearn_ksparse import KSparseAutoencoder

X, y = load_digits(return_X_y=True)
X = X / 16.0
image_shape = (8, 8)

k_values = [2, 4, 8, 16, 32]
models = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    for k in k_values:
        model = KSparseAutoencoder(n_components=64, k=k, max_iter=50, random_state=0)
        models[k] = model.fit(X)

for k, model in models.items():
    print(
        f"k={k:2d}: training explained variance {model.score(X):.3f}, "
        f"{model.n_dead_components_} dead units"
    )

# %%
# Draw the atoms
# --------------
#
# The top row shows the 48 atoms used most often, in decreasing order of
# activation frequency. Atoms are signed because the decoder adds them to
# ``pre_bias_``, which is close to the mean digit: where the atom is red the
# unit adds ink, and where it is blue it removes ink. Each atom is scaled to
# its own largest absolute value.
#
# The bottom row shows what each unit draws on its own:
# ``pre_bias_ + value * atom``, where ``value`` is the unit's mean nonzero code
# value on the training digits, in the same gray scale as the input pixels.


def tile_images(images, n_rows=6, n_columns=8):
    """Arrange flattened 8x8 images on a grid, with one blank pixel between."""
    height, width = image_shape
    grid = np.full((n_rows * (height + 1) + 1, n_columns * (width + 1) + 1), np.nan)
    for position, image in enumerate(images[: n_rows * n_columns]):
        row, column = divmod(position, n_columns)
        top = 1 + row * (height + 1)
        left = 1 + column * (width + 1)
        grid[top : top + height, left : left + width] = image.reshape(image_shape)
    return grid


def mean_code_values(model, X):
    """Return the mean nonzero code value of each unit on X (0 for unused units)."""
    codes = model.transform(X)
    totals = np.asarray(codes.sum(axis=0)).ravel()
    counts = np.bincount(codes.indices, minlength=codes.shape[1])
    return np.divide(totals, counts, out=np.zeros_like(totals), where=counts > 0)


shown_k = [k_values[0], k_values[-1]]
atoms_figure, axes = plt.subplots(2, 2, figsize=(9, 7.6), layout="constrained")
for column, k in enumerate(shown_k):
    model = models[k]
    order = np.argsort(-model.activation_frequency_, kind="stable")
    atoms = model.components_[order]
    scaled_atoms = atoms / np.abs(atoms).max(axis=1, keepdims=True)
    drawn = model.pre_bias_ + mean_code_values(model, X)[order, None] * atoms

    signed_image = axes[0, column].imshow(
        tile_images(scaled_atoms), cmap="RdBu_r", vmin=-1, vmax=1
    )
    axes[0, column].set_title(f"k = {k}: atoms ({model.score(X):.2f} expl. var.)")
    gray_image = axes[1, column].imshow(
        tile_images(drawn), cmap="gray_r", vmin=0, vmax=1
    )
    axes[1, column].set_title(f"k = {k}: one unit on its own")
for ax in axes.ravel():
    ax.set_axis_off()
atoms_figure.colorbar(signed_image, ax=axes[0], shrink=0.8, label="scaled atom")
atoms_figure.colorbar(gray_image, ax=axes[1], shrink=0.8, label="pixel intensity")
atoms_figure.suptitle("Decoder atoms of KSparseAutoencoder on digits")

# %%
# With ``k = 2`` a single unit draws a recognisable digit, and different units
# draw different digits and writing styles. With ``k = 32`` every unit on its
# own draws little more than the mean digit: its atom is a small signed change,
# and a digit appears only when many of them are added together.
#
# Measure how global the atoms are
# --------------------------------
#
# For each atom of each model, compute the cosine similarity with the closest
# training digit, after subtracting the model's ``pre_bias_`` from the digits.
# An atom that is a template of a whole digit scores close to 1; an atom that
# covers only part of a digit scores lower.


def similarity_to_nearest_digit(model, X):
    """Return, for each used atom, its largest cosine similarity with a row of X."""
    centered = X - model.pre_bias_
    centered /= np.linalg.norm(centered, axis=1, keepdims=True)
    used = model.activation_frequency_ > 0
    return (model.components_[used] @ centered.T).max(axis=1)


similarities = [similarity_to_nearest_digit(models[k], X) for k in k_values]
quartiles = np.array([np.percentile(s, [25, 50, 75]) for s in similarities])

similarity_figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")
ax.fill_between(
    k_values, quartiles[:, 0], quartiles[:, 2], alpha=0.3, label="25th-75th percentile"
)
ax.plot(k_values, quartiles[:, 1], marker="o", label="median over atoms")
ax.set_xscale("log", base=2)
ax.set_xticks(k_values, [str(k) for k in k_values])
ax.set_xlabel("k (active units per sample)")
ax.set_ylabel("cosine similarity with the closest digit")
ax.set_title("Smaller k gives atoms that look like whole digits")
ax.legend()

for k, row in zip(k_values, quartiles, strict=True):
    print(f"k={k:2d}: median similarity to the closest digit {row[1]:.2f}")

# %%
# The similarity falls steadily as ``k`` grows, while the explained variance
# printed above rises: a larger ``k`` reconstructs better with more local
# atoms. To pick ``k`` for a downstream task, see the grid search example.
#
# Set the environment variable ``SKLEARN_KSPARSE_FIGURE_DIR`` to a folder to
# save the atom figure there as ``decoder_atoms.png``; by default nothing is
# written.
figure_dir = os.environ.get("SKLEARN_KSPARSE_FIGURE_DIR")
if figure_dir:
    atoms_figure.savefig(Path(figure_dir) / "decoder_atoms.png", dpi=100)

plt.show()
