"""slirpy: rootless userspace networking for Linux network namespaces."""

__version__ = "0.1.0"
