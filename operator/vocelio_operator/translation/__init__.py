"""Pure translation: resources and discovered endpoints to one `GatewayConfig`
(`rendering`), per-resource status conditions (`status`) and the cluster index (`cluster_index`).
Golden-tested (tests/golden)."""
