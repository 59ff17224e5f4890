"""detect: train and compare object detectors with Hydra configs."""

__version__ = "0.1.0"
