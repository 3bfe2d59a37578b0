"""cc-slurm-adapter: the supervisor's actors and their shared parts."""

VERSION = "0.1.0"
