"""Test harness for real parts: a Kubernetes control plane built from the
Kubernetes Go modules (tests/controlplane), pod network namespaces, a stand-in
kubelet, and a Redis server. Used by pytest fixtures and `make dev-cluster`."""
