"""Command line of ``python -m sklearn_ksparse``."""

import argparse

from ._demo import run_digits_demo


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_ksparse",
        description=(
            "Train a K-sparse autoencoder. With no arguments, fit on "
            "scikit-learn's bundled digits and report the results."
        ),
    )
    return parser


def main(argv=None):
    build_parser().parse_args(argv)
    run_digits_demo()
    return 0
