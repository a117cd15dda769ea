"""The edge runtime: runs exported ONNX detectors on devices.

It depends on numpy, onnxruntime and OpenCV only — never on torch, ultralytics or
llama-index, not even indirectly through `shared/` (a test imports every module of this
package in a fresh interpreter and checks).
"""
