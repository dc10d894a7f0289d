"""Export: ONNX graphs of encoders and captioner, with parity checks and quantization."""
