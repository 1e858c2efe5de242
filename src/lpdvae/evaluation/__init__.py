"""What evaluate measures: metrics, the gate, the frozen evaluation set and the samples page."""
