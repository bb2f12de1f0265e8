"""The ways to get a cluster (kind, practice, an existing context) and the choice between them."""
