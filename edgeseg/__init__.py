"""edgeseg: train a MobileNetV2-DeepLabv3+ and take it to an edge device, checked at every step."""

__version__ = "0.1.0"
