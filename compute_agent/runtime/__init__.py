"""Inference runtime of the compute agent: one base model serving many LoRA adapters, embeddings,
and `run_job`, the single entry point that turns a job's input bytes into canonical output bytes."""
