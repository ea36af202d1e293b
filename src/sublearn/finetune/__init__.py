"""Student (and teacher) fine-tuning: hard-label SFT through TRL, soft-label distillation."""
