"""Model layer: resolve the base, build lora/full/head, save and load the trained part."""
