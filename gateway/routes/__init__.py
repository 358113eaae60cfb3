"""HTTP routes, one module per dialect. Handlers are short: decode, lease, call, encode."""
