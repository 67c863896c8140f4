"""Scoring trained methods: test metrics, open-vocabulary evaluation, each paper's claim, reports against the
papers, predictions on new images and attention maps."""
