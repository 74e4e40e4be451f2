"""Evolution of coherence under label noise (2008.01217): whole network and per layer."""
