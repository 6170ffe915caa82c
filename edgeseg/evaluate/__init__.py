"""A model scored against ground truth (``edgeseg eval``) or against a reference model (fidelity), with plots.
Device side: no torch (plots need matplotlib, checked before the work)."""
