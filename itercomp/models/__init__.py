"""The LLM-conditioned base model: a tokenizer and decoder-only LM, the DiT that reads its layers, the pipeline."""
