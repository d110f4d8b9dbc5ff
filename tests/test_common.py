"""scikit-learn's common estimator checks, with no expected failures."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_ksparse import KSparseAutoencoder


@parametrize_with_checks(
    [
        KSparseAutoencoder(random_state=0),
        KSparseAutoencoder(sparse_output=False, random_state=0),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
