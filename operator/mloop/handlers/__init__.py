"""kopf entry point (`kopf run -m mloop.handlers`); the only package that imports kopf."""

from mloop.handlers import lifecycle, registry  # noqa: F401 - importing registers the handlers
