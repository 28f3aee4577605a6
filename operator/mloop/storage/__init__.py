"""Artifact storage over S3: clients, layout and digests."""
