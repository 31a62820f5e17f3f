"""Ready objectives, each behind its own extra: ``hposdk.objectives.mnist``, ``hposdk.objectives.gptq``."""
