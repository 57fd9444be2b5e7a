"""Dev-only: the offline stack (moto server, gateway emulation, embedded LLM). Never imported by
functions/ or the layer's hot path."""
