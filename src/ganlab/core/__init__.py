"""What every stage shares: typed config from params.yaml, the CLI's one-line errors, safe file writes, the CPU."""
