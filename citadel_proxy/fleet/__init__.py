"""Several Ollama servers behind one gateway: inventory, placement, in-flight slots, breakers, failover."""
