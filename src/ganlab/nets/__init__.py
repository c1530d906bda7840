"""The networks: each model's reference settings, its Keras layers, and the portable saved form."""
