"""brewcli: distill large NLP models into small, fast ones from one YAML recipe."""

__version__ = "0.1.0"
