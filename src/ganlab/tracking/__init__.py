"""MLflow: one run per trained model, the registry and its champion, the served generator, the store."""
