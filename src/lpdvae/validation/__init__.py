"""What validate checks: per-song statistics, the Great Expectations suite and its page, and
drift against the champion's training data."""
