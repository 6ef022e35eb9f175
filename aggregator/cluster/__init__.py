"""The cluster: a shard that owns accounts, the link it listens on, the commands and workers."""
