"""SWAMP training core: data, models, pruning, particles, averaging and run orchestration."""

__version__ = "0.1.0"
