"""Medical-aid one-stop settlement engine."""

__version__ = "0.1.0"
