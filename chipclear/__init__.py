"""chipclear: H200-class accelerator import requests through three gates, on Temporal."""

__version__ = "0.1.0"
