import dagster as dg

# One partition per raw shard index k (binary_dataset_128_<k>.npy + spectra_latest_<k>.npy). New simulation
# batches arrive as new shards: the sensor adds their keys, and only they are processed.
shards = dg.DynamicPartitionsDefinition(name="shards")
