"""Commands outside the pipeline: sample, serve, compare, resend, share a sweep, the offline plots page."""
