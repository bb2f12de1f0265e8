"""The lab: one `connect()` for kind, the practice cluster or any existing kubeconfig context."""

from autograder.lab.cluster import PROVIDERS, Lab, choose, connect, provider
from autograder.lab.provider import CLUSTER_NAME, ClusterError

__all__ = ["CLUSTER_NAME", "PROVIDERS", "ClusterError", "Lab", "choose", "connect", "provider"]
