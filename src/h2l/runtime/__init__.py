"""Layer 5: onnxruntime sessions with honest provider handling, and the I/O contract of a session."""
