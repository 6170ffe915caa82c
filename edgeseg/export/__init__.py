"""``edgeseg export``: ONNX, FP16, INT8 (calibration, Q/DQ, equalization, sensitivity) and the parity proof,
written as the deployment bundle. Workstation side: needs torch and onnx."""
