"""The lab, what notebooks import: one `connect()` for kind, practice or an existing context."""

from autograder.lab.cluster import connect
from autograder.providers.choice import PROVIDERS, choose, provider
from autograder.shared.provider import CLUSTER_NAME, ClusterError, Lab

__all__ = ["CLUSTER_NAME", "PROVIDERS", "ClusterError", "Lab", "choose", "connect", "provider"]
