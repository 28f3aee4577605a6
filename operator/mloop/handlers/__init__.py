"""kopf entry point (`kopf run -m mloop.handlers`); the only package that imports kopf."""

from mloop.handlers import dataset, erasure, lifecycle, modelpackage, requirement, trainingrun  # noqa: F401 - importing registers the handlers
