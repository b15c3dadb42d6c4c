"""What runs a finished checkpoint: evaluation (perplexity), export to Hugging Face, generation."""
