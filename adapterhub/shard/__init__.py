"""Shard engines: MoS (Mixture-of-Shards) adapters and shared shard pools for adapter libraries."""

# MoS adapters (``adapterhub.shard.mos``); the trainer is imported on its own:
# ``from adapterhub.shard.mos_train import train_mos_adapter``.
from adapterhub.shard.mos import (
    MosConfig,
    MosLinear,
    MosPools,
    attach_pools,
    export_lora,
    install_mos,
    mos_installed,
    pools_from_model,
    remove_mos,
)

# Library packing into shared shard pools (``adapterhub.shard.pack``).
from adapterhub.shard.pack import PackedLibrary, PackStats, pack_library
from adapterhub.shard.pack_baselines import int8_quantise, truncate_rank
