"""The Kubernetes edge: kopf handlers, the reconcile loop, the API writer and metrics."""
