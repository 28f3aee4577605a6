"""The Kubernetes adapter: clients, kubectl, CRD installation."""
