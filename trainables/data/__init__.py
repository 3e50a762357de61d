"""Datasets and the input pipeline: built-in digits, CIFAR, image folders, ImageNet, Hugging Face datasets, synthetic tensors; the model's own data config on top."""
