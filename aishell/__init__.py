"""aishell: a DBA assistant that plans, checks, runs and checkpoints database maintenance."""

__version__ = "0.1.0"
