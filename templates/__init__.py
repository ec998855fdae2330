"""Bundled model specs, installed as the package data `xlformer.templates`."""
