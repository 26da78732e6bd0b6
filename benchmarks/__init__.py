"""Speed and learning benchmarks of jaxlab against the libraries users would pick
instead; each module runs as ``python -m benchmarks.<name>`` (see README.md)."""
