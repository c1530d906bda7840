"""The report stage: plots and the Markdown/HTML report of one run beside its experiment's others."""
