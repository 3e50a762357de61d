"""Parameter-efficient adapters through peft: LoRA and its variants applied, counted, merged."""
