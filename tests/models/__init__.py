"""Tests of the model layer: adapters, resilience wrappers, the embedded model."""
