"""The Open Inference Protocol (KServe v2, Triton-compatible) over gRPC, beside the HTTP server."""
