"""Repository-wide pytest configuration."""

collect_ignore = ["hposdk/__main__.py"]
