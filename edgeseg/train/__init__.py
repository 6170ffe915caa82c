"""``edgeseg train``: the training loop, its schedule, validation and curves. Workstation side: needs torch."""
