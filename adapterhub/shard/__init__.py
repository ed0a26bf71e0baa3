"""Shard engines: MoS (Mixture-of-Shards) adapters and shared shard pools for adapter libraries."""
