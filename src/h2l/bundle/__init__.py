"""Layer 6: the bundle on disk: manifest schema, hashes, golden vectors, safe opening."""
