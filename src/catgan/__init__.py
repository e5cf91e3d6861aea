"""catgan: learn to draw new cat faces from photos."""

__version__ = "0.1.0"
