"""Code that runs inside task pods (or local subprocesses): never imports kopf or the Kubernetes client."""
