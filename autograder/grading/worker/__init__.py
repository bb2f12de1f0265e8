"""The grading worker: one process per submission that runs its notebooks and judges the cluster it left."""
