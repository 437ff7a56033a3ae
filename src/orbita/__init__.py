"""Orbita: customer-engagement engine — CRM strategy as code."""

__version__ = "0.1.0"
