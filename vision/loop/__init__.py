"""The closed loop: frames to labelers, labels to datasets, retraining, the gate, promotion."""
