"""The classifier stage and the evaluate stage: the figures that say how good a generator is."""
