"""The package version, in a leaf module so that engines can name it without importing the API."""

__version__ = "0.1.0"
