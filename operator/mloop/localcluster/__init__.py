"""A real local control plane: etcd, kube-apiserver, kube-controller-manager and an S3 server.

Built from Go modules (see build-binaries.sh) and started on loopback with generated
certificates, the way controller-runtime's envtest does it.
"""

from mloop.localcluster.binaries import Binaries, find_binaries
from mloop.localcluster.stack import LocalStack, StackInfo

__all__ = ["Binaries", "LocalStack", "StackInfo", "find_binaries"]
