"""Detectors built from torchvision parts."""
