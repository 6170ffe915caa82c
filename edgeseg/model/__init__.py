"""The network (MobileNetV2-DeepLabv3+, the seed repository's layout), its checkpoints, losses and MACs, and the
PyTorch backend that runs a .pt. Workstation side: needs torch."""
