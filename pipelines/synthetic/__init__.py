"""Synthetic sample data: real media files and small datasets generated on the fly for tests."""
