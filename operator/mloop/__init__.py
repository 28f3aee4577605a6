"""mloop: the build side of machine learning as Kubernetes control loops."""

__version__ = "0.1.0"
