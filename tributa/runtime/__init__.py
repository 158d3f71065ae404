"""Inference runtime shared by the compute agents and the oracle's re-execution: one base model
serving many LoRA adapters, embeddings, `run_job` (a job's input bytes to canonical output bytes),
the `Executor` that maps registered model parts onto it, and the per-job sandbox."""
