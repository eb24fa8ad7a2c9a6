"""Modeling: training a model from a training workflow config."""
