"""What every stage shares: errors, file writing, images, the model's metadata and its ONNX form, metrics, system facts.

Torch-free and light: a Jetson imports all of it. Imports nothing else of edgeseg.
"""
