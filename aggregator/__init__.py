"""StreamTally aggregator: sessions, windows, k-anonymity, storage and everything customers read."""
