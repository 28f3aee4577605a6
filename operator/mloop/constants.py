"""Names shared by handlers, builders and tests."""

from mloop.api.kinds import GROUP

FINALIZER = f"{GROUP}/finalizer"
# kopf's progress and diff-base annotations live under this prefix, never in status.
ANNOTATION_PREFIX = GROUP
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_EXPERIMENT = f"{GROUP}/experiment"
MANAGER = "mloop-operator"
