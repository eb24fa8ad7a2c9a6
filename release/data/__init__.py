"""Data: the event-log ingest, labels and their completeness, the feature definitions (offline and online
engines), the training set and its quality checks."""
