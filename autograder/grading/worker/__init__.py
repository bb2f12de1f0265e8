"""The grading worker: a process per submission; runs its notebooks, judges the cluster left."""
