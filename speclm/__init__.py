"""speclm: small specialized language models from a large generic corpus plus a little domain text."""

__version__ = "0.1.0"
