"""The user endpoint: runs as the researcher and executes their tasks on an engine."""
