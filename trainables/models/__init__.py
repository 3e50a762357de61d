"""Models by name: timm / torchvision / Hugging Face factories, aliases and installed names, classifier heads, checkpoints and the weights a trial starts from."""
