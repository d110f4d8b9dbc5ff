"""
=================================
Sparse codes of a tabular dataset
=================================

K-sparse autoencoders are not limited to images. This example encodes the
30 standardised measurements of scikit-learn's breast cancer dataset with
:class:`~sklearn_ksparse.KSparseAutoencoder`, trains a logistic regression on
the sparse codes, and draws which units fire for which samples.
"""

# %%
# Encode and classify
# -------------------
#
# The measurements have very different scales, so they are standardised
# first. The autoencoder has 32 units and keeps 4 per sample. With only 426
# training rows, minibatches of 64 rows give several optimizer steps per
# epoch, and ``max_iter=500`` leaves room for the stopping rule (10 epochs
# without improvement) to end training. The codes go straight into the
# classifier as a sparse matrix.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_ksparse import KSparseAutoencoder

data = load_breast_cancer()
X_train, X_test, y_train, y_test = train_test_split(
    data.data, data.target, test_size=0.25, stratify=data.target, random_state=0
)

code_pipeline = make_pipeline(
    StandardScaler(),
    KSparseAutoencoder(
        n_components=32, k=4, batch_size=64, max_iter=500, random_state=0
    ),
    LogisticRegression(max_iter=1000),
)
code_pipeline.fit(X_train, y_train)
feature_pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
feature_pipeline.fit(X_train, y_train)

scaler = code_pipeline.named_steps["standardscaler"]
autoencoder = code_pipeline.named_steps["ksparseautoencoder"]
print(
    f"explained variance of the test rows: "
    f"{autoencoder.score(scaler.transform(X_test)):.3f}"
)
print(f"test accuracy on 4-sparse codes:     {code_pipeline.score(X_test, y_test):.3f}")
print(
    f"test accuracy on the 30 features:    {feature_pipeline.score(X_test, y_test):.3f}"
)

# %%
# Which units fire for which class
# --------------------------------
#
# The left panel shows the codes of the test rows, one row per sample, grouped
# by class (malignant above, benign below). White cells are exact zeros: each
# row has at most four colored cells. The units are ordered by the difference
# between their firing rates in the two classes, so units specific to
# malignant tumours come first. The right panel shows those firing rates.
codes = code_pipeline[:-1].transform(X_test)
unit_names = autoencoder.get_feature_names_out()

fires = codes.toarray() > 0
rate_malignant = fires[y_test == 0].mean(axis=0)
rate_benign = fires[y_test == 1].mean(axis=0)
unit_order = np.argsort(rate_benign - rate_malignant, kind="stable")
sample_order = np.argsort(y_test, kind="stable")
n_malignant = int(np.sum(y_test == 0))

dense_codes = codes[sample_order][:, unit_order].toarray()
shown_codes = np.where(dense_codes > 0, dense_codes, np.nan)

fig, (codes_ax, rate_ax) = plt.subplots(
    1, 2, figsize=(11, 5), layout="constrained", width_ratios=[1.4, 1]
)
image = codes_ax.imshow(
    shown_codes, aspect="auto", cmap="viridis", interpolation="nearest"
)
codes_ax.axhline(n_malignant - 0.5, color="black", linewidth=1)
codes_ax.set_xlabel("unit (ordered by class preference)")
codes_ax.set_ylabel("test sample (malignant above the line)")
codes_ax.set_title("Nonzero code values")
fig.colorbar(image, ax=codes_ax, label="code value")

positions = np.arange(len(unit_order))
rate_ax.bar(positions - 0.2, rate_malignant[unit_order], width=0.4, label="malignant")
rate_ax.bar(positions + 0.2, rate_benign[unit_order], width=0.4, label="benign")
rate_ax.set_xlabel("unit (same order)")
rate_ax.set_ylabel("fraction of the class's test samples")
rate_ax.set_title("Firing rate per class")
rate_ax.legend()

# %%
# Many units fire mostly for one of the two classes, which is why a linear
# model on four nonzeros per sample comes close to the accuracy of the model
# on all 30 measurements. A few units fire rarely for either class; they
# describe unusual rows rather than a class.
#
# What the most class-specific units encode
# -----------------------------------------
#
# Each unit adds its decoder atom (a row of ``components_``) to the
# reconstruction, so the largest entries of the atom name the measurements the
# unit describes. The output names of the autoencoder
# (``get_feature_names_out``) identify the units.
for unit in [unit_order[0], unit_order[-1]]:
    atom = autoencoder.components_[unit]
    largest = np.argsort(-np.abs(atom))[:3]
    described = ", ".join(f"{data.feature_names[j]} ({atom[j]:+.2f})" for j in largest)
    print(
        f"{unit_names[unit]}: fires for {rate_malignant[unit]:.0%} of malignant and "
        f"{rate_benign[unit]:.0%} of benign test rows; largest atom entries: "
        f"{described}"
    )

plt.show()
