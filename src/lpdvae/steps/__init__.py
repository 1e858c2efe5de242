"""The six pipeline steps. Each is a plain function; the CLI, DVC and KFP are thin callers."""
